"""SIGTERM to a real `kimi-proxy serve`: a deploy that cuts no stream. The instance leaves the
rotation (`/ready` 503), refuses new work with a 503 that balancers retry elsewhere, lets the
streams in flight finish, ends what outlives the grace period with an error event, and
exits 0."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from support.instances import start
from support.proxy import TEST_KEY
from support.sse_client import BASIC, parse_sse
from support.upstream import Pause, Stream, chunk, scripted_upstream, text_stream


def slow(pieces: int, seconds: float) -> Stream:
    items: list[Any] = [chunk({"role": "assistant", "content": ""})]
    for i in range(pieces):
        items += [Pause(seconds), chunk({"content": f"{i} "})]
    return Stream(items + text_stream("").items[-2:])


def legacy(upstream_url: str) -> dict[str, str]:
    """One provider at `upstream_url`, as the single-provider settings describe it."""
    return {"KIMI_UPSTREAM_URL": upstream_url, "KIMI_API_KEY": TEST_KEY, "KIMI_MODEL": "kimi-big"}


def stream_text(url: str) -> tuple[str, list[str]]:
    with httpx.Client(timeout=60) as client:
        response = client.post(f"{url}/v1/messages", json={**BASIC, "stream": True})
    events = parse_sse(response.content)
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    return text, [name for name, _ in events]


def test_sigterm_lets_twenty_open_streams_finish_and_refuses_new_work(tmp_path: Path) -> None:
    with scripted_upstream(lambda b, n: slow(20, 0.1)) as upstream:
        instance = start(tmp_path / "proxy.log", **legacy(upstream.base_url))
        url, process = instance.url, instance.process
        try:
            assert httpx.get(f"{url}/ready").status_code == 200
            with ThreadPoolExecutor(20) as pool:
                streams = [pool.submit(stream_text, url) for _ in range(20)]
                deadline = time.monotonic() + 10
                while len(upstream.requests) < 20:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                process.send_signal(signal.SIGTERM)
                time.sleep(0.2)
                ready = httpx.get(f"{url}/ready")
                refused = httpx.post(f"{url}/v1/messages", json=BASIC)
                results = [s.result(timeout=30) for s in streams]
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "overloaded_error"
    assert "shutting down" in refused.json()["error"]["message"]
    expected = "".join(f"{i} " for i in range(20))
    for text, names in results:
        assert text == expected and names[-1] == "message_stop", names[-3:]
    assert len(upstream.requests) == 20  # the refused request never reached the provider


def test_a_stream_that_outlives_the_grace_period_ends_with_an_error_event(
    tmp_path: Path,
) -> None:
    with scripted_upstream(lambda b, n: slow(100, 0.1)) as upstream:
        env = legacy(upstream.base_url)
        instance = start(tmp_path / "proxy.log", **env, KIMI_DRAIN_SECONDS="1")
        url, process = instance.url, instance.process
        try:
            with ThreadPoolExecutor(1) as pool:
                stream = pool.submit(stream_text, url)
                deadline = time.monotonic() + 10
                while not upstream.requests:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                time.sleep(0.3)
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                text, names = stream.result(timeout=30)
            assert process.wait(timeout=30) == 0
            assert time.monotonic() - started < 6
        finally:
            process.kill()
    assert text and names[-1] == "error" and "message_stop" not in names
    assert upstream.requests[0].wait_cancelled()  # the provider's stream was closed too
