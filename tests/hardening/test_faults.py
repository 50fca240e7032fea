"""Faults survived, against the real server: each ends in a well-formed Anthropic error (or a
clean stream), nothing hangs past the configured timeouts, and the next request succeeds."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from support.proxy import TEST_KEY, Harness, proxy_for, wait_healthy
from support.sse_client import BASIC, parse_sse, post_stream
from support.upstream import Pause, Stream, chunk, free_port, scripted_upstream, text_stream, usage


def next_request_succeeds(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: text_stream("still here")
    _, events = post_stream(proxy.url, BASIC)
    assert events[-1][0] == "message_stop"


def test_tool_call_whose_arguments_never_close(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: Stream(
        [
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "Write", "arguments": '{"file_path": "/a'},
                        }
                    ]
                }
            ),
            chunk({}, finish="tool_calls", usage=usage()),
        ]
    )
    _, events = post_stream(proxy.url, BASIC)
    names = [n for n, _ in events]
    assert names[-1] == "error" and "message_stop" not in names
    assert "not valid JSON" in events[-1][1]["error"]["message"]
    next_request_succeeds(proxy)


def _open_connections_to(port: int) -> int:
    return sum(
        1
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def test_a_thousand_client_disconnects_leave_nothing_behind() -> None:
    endless = Stream([chunk({"content": "x"})] + [Pause(0.02), chunk({"content": "y"})] * 5000)
    with proxy_for(lambda b, n: endless) as proxy:
        upstream_port = int(proxy.upstream.base_url.split(":")[2].split("/")[0])
        process = psutil.Process()

        def one_disconnect(client: httpx.Client) -> None:
            with client.stream(
                "POST", f"{proxy.url}/v1/messages", json={**BASIC, "stream": True}
            ) as response:
                for line in response.iter_lines():
                    if "text_delta" in line:
                        break

        with httpx.Client(timeout=10) as client:
            for _ in range(50):  # warm-up: pools, caches, imports
                one_disconnect(client)
            rss_before = process.memory_info().rss
            for _ in range(1000):
                one_disconnect(client)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (
                client.get(f"{proxy.url}/health").json()["active_streams"]
                or _open_connections_to(upstream_port)
                or not all(r.ended_at for r in proxy.upstream.requests)
            ):
                time.sleep(0.05)
            rss_growth_mb = (process.memory_info().rss - rss_before) / 1e6
            assert client.get(f"{proxy.url}/health").json()["active_streams"] == 0
        assert _open_connections_to(upstream_port) == 0, "upstream connections left open"
        assert len(proxy.upstream.requests) == 1050
        assert all(r.cancelled and not r.finished for r in proxy.upstream.requests)
        assert rss_growth_mb < 30, f"memory grew by {rss_growth_mb:.1f} MB over 1000 disconnects"
        next_request_succeeds(proxy)


def test_slowloris_and_slow_bodies_do_not_block_others() -> None:
    with proxy_for(lambda b, n: text_stream("ok"), body_timeout=1.0) as proxy:
        host, port = "127.0.0.1", int(proxy.url.rsplit(":", 1)[1])
        lazy = []
        for _ in range(50):  # headers that never finish
            sock = socket.create_connection((host, port))
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nX-a: ")
            lazy.append(sock)
        trickle = socket.create_connection((host, port))
        trickle.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"
        )
        started = time.monotonic()
        _, events = post_stream(proxy.url, BASIC)
        assert events[-1][0] == "message_stop"
        assert time.monotonic() - started < 2
        trickle.settimeout(5)
        answer = trickle.recv(4096)
        assert b"400" in answer.split(b"\r\n")[0]
        assert b"took over 1 s to arrive" in answer
        for sock in [*lazy, trickle]:
            sock.close()


def test_garbage_on_the_socket() -> None:
    rng = random.Random(7)
    with proxy_for(lambda b, n: text_stream("ok")) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        for size in (1, 17, 300, 5000):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(bytes(rng.randrange(256) for _ in range(size)) + b"\r\n\r\n")
                try:
                    reply = sock.recv(1024)
                except OSError:
                    reply = b""
                assert reply == b"" or reply.startswith(b"HTTP/1.1 400")
        next_request_succeeds(proxy)


def test_sigterm_drains_live_streams_then_exits_zero(tmp_path: Path) -> None:
    slow = Stream(
        [
            chunk({"content": "a"}),
            Pause(1.5),
            chunk({"content": "b"}),
            chunk({}, finish="stop", usage=usage()),
        ]
    )
    with scripted_upstream(lambda b, n: slow) as upstream:
        port = free_port()
        env = {
            **os.environ,
            "KIMI_API_KEY": TEST_KEY,
            "KIMI_UPSTREAM_URL": upstream.base_url,
            "KIMI_PROXY_PORT": str(port),
            "KIMI_LOG_LEVEL": "warning",
        }
        log = (tmp_path / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "kimi_proxy", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, 20, tmp_path / "server.log")
            results: list[Any] = []

            def stream_one() -> None:
                try:
                    with httpx.Client(timeout=20) as client:
                        response = client.post(f"{url}/v1/messages", json={**BASIC, "stream": True})
                        results.append(parse_sse(response.content)[-1][0])
                except httpx.HTTPError as exc:
                    results.append(repr(exc))

            threads = [threading.Thread(target=stream_one) for _ in range(50)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 20
            while len(upstream.requests) < 50:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.01)
            server.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            # Out of rotation, still alive: streams in flight go on (tests/server/test_drain.py).
            assert httpx.get(f"{url}/ready", timeout=1).status_code == 503
            assert httpx.get(f"{url}/health", timeout=1).status_code == 200
            for thread in threads:
                thread.join(timeout=20)
            assert server.wait(timeout=20) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            log.close()
    assert results == ["message_stop"] * 50, (tmp_path / "server.log").read_text()


def test_stateless_workers_get_the_command_line_settings(tmp_path: Path) -> None:
    with scripted_upstream(lambda b, n: text_stream("from a worker")) as upstream:
        port = free_port()
        env = {**os.environ, "KIMI_API_KEY": TEST_KEY, "KIMI_LOG_LEVEL": "warning"}
        log = (tmp_path / "server.log").open("wb")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kimi_proxy",
                "serve",
                "--workers",
                "2",
                "--port",
                str(port),
                "--upstream-url",
                upstream.base_url,
                "--model",
                "flag-model",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, 30, tmp_path / "server.log")
            for _ in range(6):
                _, events = post_stream(url, BASIC)
                assert events[-1][0] == "message_stop"
            assert {b["model"] for b in upstream.bodies} == {"flag-model"}
            workers = [
                c
                for c in psutil.Process(server.pid).children()
                if "spawn_main" in " ".join(c.cmdline())
            ]
            assert len(workers) == 2
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
