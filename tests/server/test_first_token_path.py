"""No timer, poll or second read on the path to the first token (issue #29): the request
reaches the provider, and the provider's first content reaches the client, each within a
bound far below any timer the path could wait on (a poll, a flush interval, a ping)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send
from support.proxy import proxy_for, proxy_settings, serve_app
from support.sse_client import BASIC
from support.upstream import Pause, Stream, chunk, scripted_upstream, text_stream

from kimi_proxy.server.app import create_app, proxy_state
from kimi_proxy.server.state import FREE_AFTER, ProxyState
from kimi_proxy.server.wire import HeadWithBody

BOUND_S = 0.05  # generous for a loaded CI machine; any timer put back costs more than this


def slow_tail() -> Stream:
    """The first content at once, then silence: only what the proxy does lies in between."""
    return Stream([*text_stream("first", pieces=1).items[:2], Pause(0.5), chunk({}, finish="stop")])


def test_the_request_and_the_first_token_each_cross_the_proxy_without_waiting() -> None:
    with (
        proxy_for(lambda body, n: slow_tail(), ping_interval=30.0) as proxy,
        httpx.Client(base_url=proxy.url, timeout=10) as client,
    ):
        body = {**BASIC, "stream": True}
        waits: list[tuple[float, float]] = []
        for _ in range(4):  # the first warms imports and connections
            sent = time.monotonic()
            with client.stream("POST", "/v1/messages", json=body) as answer:
                for line in answer.iter_lines():
                    if '"text_delta"' in line:
                        arrived = time.monotonic()
                        break
            record = proxy.upstream.requests[-1]
            assert record.first_sent_at is not None
            waits.append((record.received_at - sent, arrived - record.first_sent_at))
    to_provider = min(w[0] for w in waits[1:])  # the best of three: a busy machine's slowest
    to_client = min(w[1] for w in waits[1:])  # request says nothing of the proxy
    assert to_provider < BOUND_S, f"the request waited {to_provider * 1000:.1f} ms"
    assert to_client < BOUND_S, f"the first token waited {to_client * 1000:.1f} ms"


async def test_what_a_request_let_go_of_is_freed_soon_after_not_on_the_path() -> None:
    """The parsed request and its JSON (thousands of objects for Claude Code's request) are
    freed while the provider thinks: kept past the loop's next turns (the request goes out,
    a fast provider's first token comes back), let go within milliseconds, never kept."""
    state = ProxyState(settings=proxy_settings("http://127.0.0.1:9/v1"), pool=None)  # type: ignore[arg-type]

    class Parsed:
        pass

    parsed = Parsed()
    gone = weakref.ref(parsed)
    state.free_later(parsed)
    del parsed
    for _ in range(3):  # not freed on the request's path, nor the first token's
        await asyncio.sleep(0)
        assert gone() is not None
    await asyncio.sleep(FREE_AFTER * 5)
    assert gone() is None and not state.graveyard


def test_a_stream_is_closed_logged_and_freed_before_its_end_is_written(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sends its next request once a stream's end arrives (Claude Code, the SDK, the
    benchmark's client): the stream's closing (its slot, its provider response), its record
    (the access-log line, metrics, the dashboard) and the freeing of what it let go of are done
    before that end is written, so that they do not stand in the next request's way (~0.1 ms
    of the benchmark's TTFT), even when the stream was shorter than `FREE_AFTER`."""
    caplog.set_level(logging.INFO, logger="kimi_proxy.access")
    monkeypatch.setattr("kimi_proxy.server.state.FREE_AFTER", 60.0)
    at_end: list[tuple[int, int, int]] = []  # (log lines, open streams, unfreed) at the end
    with scripted_upstream(lambda body, n: text_stream("all of it")) as upstream:
        settings = proxy_settings(upstream.base_url)
        app = create_app(settings)
        state = proxy_state(app)

        async def watching(scope: Scope, receive: Receive, send: Send) -> None:
            async def send_watched(message: Message) -> None:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    lines = [r for r in caplog.records if r.name == "kimi_proxy.access"]
                    at_end.append((len(lines), state.active_streams, len(state.graveyard)))
                await send(message)

            await app(scope, receive, send_watched)

        with serve_app(watching) as url, httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(2):
                answer = client.post("/v1/messages", json={**BASIC, "stream": True})
                assert answer.status_code == 200 and '"text_delta"' in answer.text
    assert at_end == [(1, 0, 0), (2, 0, 0)]


def test_the_trace_times_each_step_to_the_first_token_from_the_last_response_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`KIMI_TRACE_STEPS=1`: one line a request, each step's wall and CPU time; from the second
    request on, it starts where the last response ended, so that another request's tail in the
    way shows (that is how the bookkeeping after a stream's end was found)."""
    caplog.set_level(logging.INFO, logger="kimi_proxy.trace")
    with (
        proxy_for(lambda body, n: text_stream("traced"), trace_steps=True) as proxy,
        httpx.Client(base_url=proxy.url, timeout=10) as client,
    ):
        for _ in range(2):
            answer = client.post("/v1/messages", json={**BASIC, "stream": True})
            assert answer.status_code == 200
    traced = [r.getMessage() for r in caplog.records if r.name == "kimi_proxy.trace"]
    first, second = (orjson.loads(line)["steps"] for line in traced)
    path = [
        "body read and validated",
        "planned (route, translation, estimate)",
        "provider's headers",
        "message_start ready",
        "first content chunk translated",
        "first delta written",
    ]
    assert [s["step"] for s in first] == path
    assert [s["step"] for s in second] == ["arrived (since the last response ended)", *path]
    assert all(0 <= s["cpu_ms"] <= s["wall_ms"] + 0.5 for s in second)


@contextmanager
def provider_answering_at_once(then_wait: float) -> Iterator[str]:
    """A provider whose answer's headers and first content come in one write (as a fast one's
    often do: one read for both at the proxy), the rest `then_wait` seconds later."""
    items = text_stream("first token", pieces=2).items  # the role, two texts, the finish
    frames = [b"data: " + orjson.dumps(item) + b"\n\n" for item in items]
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def read_more(conn: socket.socket, data: bytes) -> bytes:
        more = conn.recv(65536)
        if not more:
            raise ConnectionError("the proxy closed the connection mid-request")
        return data + more

    def answer(conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data = read_more(conn, data)
            head_in, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head_in.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            while len(body) < length:
                body = read_more(conn, body)
            conn.sendall(head + b"".join(frames[:2]))  # the headers, the role, the first text
            time.sleep(then_wait)
            conn.sendall(b"".join(frames[2:]) + b"data: [DONE]\n\n")

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    finally:
        server.close()


def test_the_head_message_start_and_first_delta_leave_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the provider's first content comes with its headers, the client gets the
    response's head, `message_start` and the first delta in one write: one packet, one wake-up
    of the client (three writes put 0.03–0.04 ms on the benchmark's time to the first token,
    docs/ARCHITECTURE.md)."""
    writes: list[bytes] = []
    plain = HeadWithBody.__init__

    class Recorded:
        def __init__(self, transport: asyncio.Transport) -> None:
            self.transport = transport

        def write(self, data: bytes) -> None:
            writes.append(bytes(data))
            self.transport.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.transport, name)

    def recording(self: HeadWithBody, transport: Any, loop: Any) -> None:
        plain(self, Recorded(transport), loop)  # type: ignore[arg-type]

    monkeypatch.setattr(HeadWithBody, "__init__", recording)
    with provider_answering_at_once(then_wait=0.3) as provider:
        app = create_app(proxy_settings(provider))
        with serve_app(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            answer = client.post("/v1/messages", json={**BASIC, "stream": True})
    assert answer.status_code == 200 and "first token" in "".join(
        orjson.loads(line[6:])["delta"].get("text", "")
        for line in answer.text.splitlines()
        if line.startswith("data: ") and '"content_block_delta"' in line
    )
    first = writes[0]
    assert first.startswith(b"HTTP/1.1 200")
    assert b"event: message_start" in first and b"event: content_block_delta" in first


def test_message_start_does_not_wait_for_a_provider_that_is_slow_to_its_first_token() -> None:
    """Held for the first delta only within the loop's step: while the provider thinks, the
    client already has the stream's head and `message_start`."""
    late = Stream([Pause(2.0), *text_stream("late", pieces=1).items])
    with (
        proxy_for(lambda body, n: late) as proxy,
        httpx.Client(base_url=proxy.url, timeout=10) as client,
    ):
        sent = time.monotonic()
        with client.stream("POST", "/v1/messages", json={**BASIC, "stream": True}) as answer:
            assert answer.status_code == 200
            lines = answer.iter_lines()
            for line in lines:
                if line.startswith("event: message_start"):
                    break
            started = time.monotonic() - sent
            assert started < 1.0, f"message_start came after {started:.2f} s"
            assert "late" in "".join(lines)
