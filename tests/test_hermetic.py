"""The suite never touches the caller's providers: with a home folder holding the config file
docs/CONFIG.md describes and every key and proxy variable pointing at a provider the suite did
not start, a run of the tests that start proxies (in process, as `serve` subprocesses, through
the launcher's environment) passes, and that provider receives nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support.upstream import serve_in_thread

REPO = Path(__file__).resolve().parents[1]
# Tests that build settings from the environment in process, start `kimi-proxy serve`
# subprocesses with `{**os.environ, …}`, and compute the launcher's environment.
SAMPLE = [
    "tests/test_launcher_env.py",
    "tests/hardening/test_faults.py::test_sigterm_drains_live_streams_then_exits_zero",
    "tests/hardening/test_faults.py::test_stateless_workers_get_the_command_line_settings",
    "tests/server/test_messages.py",
    "tests/providers/test_config_file.py",
    "tests/search/test_web_search.py::test_without_a_backend_the_answer_says_what_to_set_not_an_api_error",
]


def test_a_run_of_the_suite_sends_nothing_to_the_callers_provider(tmp_path: Path) -> None:
    reached: list[str] = []

    async def anything(request: Request) -> JSONResponse:
        reached.append(f"{request.method} {request.url.path}")
        return JSONResponse({"error": {"message": "the caller's provider was reached"}}, 500)

    app = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST", "HEAD"])])
    with serve_in_thread(app) as canary:
        home = tmp_path / "home"
        config = home / ".config" / "kimi-proxy"
        config.mkdir(parents=True)
        (config / "config.toml").write_text(
            f'[[provider]]\nname = "myvllm"\nbase_url = "{canary}/v1"\n'
            'keys = ["${MYVLLM_KEY}"]\n\n'
            '[family.kimi]\ncandidates = ["myvllm:kimi-k2.6"]\n'
        )
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "MYVLLM_KEY": "sk-the-callers-own-key-0001",
            "MOONSHOT_API_KEY": "sk-the-callers-own-key-0002",
            "GROQ_API_KEY": "gsk_the-callers-own-key-0003",
            "KIMI_API_KEY": "sk-the-callers-own-key-0004",
            "KIMI_UPSTREAM_URL": f"{canary}/v1",
            "KIMI_PROXY_CONFIG": str(config / "config.toml"),
            "HTTP_PROXY": canary,
            "HTTPS_PROXY": canary,
            "ALL_PROXY": canary,
            "SEARXNG_URL": canary,  # web search backends and traces: the caller's too
            "BRAVE_API_KEY": "the-callers-own-search-key-0005",
            "OTEL_EXPORTER_OTLP_ENDPOINT": canary,
        }
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SAMPLE],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert reached == [], "the caller's provider was reached"
