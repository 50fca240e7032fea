"""The small promises a new user meets first: what /health shows, /ready when nothing can be
served, a pipe closed early, what `pip install .` installs, messages naming the config file."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from support.proxy import proxy_for, serve_app
from support.upstream import scripted_upstream, text_stream

from kimi_proxy.cli.launcher import PortTaken, free_port, start_proxy, stop_proxy
from kimi_proxy.config.settings import Settings
from kimi_proxy.errors import error_from_transport

REPO = Path(__file__).resolve().parents[1]


def test_health_shows_no_url_and_ready_says_why_nothing_can_be_served() -> None:
    with proxy_for(lambda b, n: text_stream("ok")) as proxy:
        health = httpx.get(f"{proxy.url}/health").json()
        assert "://" not in str(health)
        assert httpx.get(f"{proxy.url}/ready").status_code == 200
    with proxy_for(lambda b, n: text_stream("ok"), api_key=None) as keyless:
        ready = httpx.get(f"{keyless.url}/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "no_candidate"
        assert "No provider key" in ready.json()["reason"]


def test_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    """`kimi-proxy users list | head -0`: the reader has gone; no traceback."""
    users = tmp_path / "users.json"
    for name in ("ann", "ben"):
        added = subprocess.run(
            [sys.executable, "-m", "kimi_proxy", "users", "--users-file", str(users), "add", name],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert added.returncode == 0
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as closed:
        listed = subprocess.run(
            [sys.executable, "-m", "kimi_proxy", "users", "--users-file", str(users), "list"],
            stdout=closed,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    assert b"Traceback" not in listed.stderr
    assert listed.returncode == 141


def test_pip_install_puts_only_the_package_on_the_path(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("kimi_proxy-*.whl")
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "bench" not in tops and "kimi_proxy" in tops


def test_a_connection_error_names_where_the_url_is_set() -> None:
    with scripted_upstream(lambda b, n: text_stream("ok")) as upstream:
        dead = upstream.base_url
    error = error_from_transport(
        httpx.ConnectError("refused"),
        upstream=dead,
        setting="the base_url of [[provider]] 'myvllm' in /home/me/config.toml",
    )
    assert "/home/me/config.toml" in error.message
    assert "KIMI_UPSTREAM_URL" not in error.message


def test_the_launcher_trusts_only_the_proxy_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M11: a program that took the port between the launcher's look and its start, and
    answers /health like a proxy, was handed the user's key and prompts."""
    monkeypatch.setenv("KIMI_LAUNCHER_LOG", str(tmp_path / "launcher.log"))
    impostor = Starlette(
        routes=[Route("/health", lambda r: JSONResponse({"status": "ok", "families": {}}))]
    )
    with serve_app(impostor) as url:
        port = int(url.rsplit(":", 1)[1])
        settings = Settings(port=port)
        with pytest.raises(PortTaken, match=f"another program answers on port {port}"):
            start_proxy(settings, url)
    port = free_port()
    ours = start_proxy(Settings(port=port), f"http://127.0.0.1:{port}")
    try:
        assert len(httpx.get(f"http://127.0.0.1:{port}/health").json()["launch_id"]) == 32
    finally:
        stop_proxy(ours)
