"""The gateway under attack (issue 28): each finding's attack, against the real server, and the
instance serving others meanwhile."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.instances import instances
from support.proxy import proxy_for
from support.sse_client import BASIC
from support.upstream import Pause, Stream, text_stream

from kimi_proxy.cli.launcher import free_port
from kimi_proxy.errors import error_from_transport
from kimi_proxy.gateway.metering import increments, rows_from_access_log, rows_from_fields
from kimi_proxy.protocol.record import RequestRecord, client_id
from kimi_proxy.server import wire
from kimi_proxy.server.app import configure_logging
from kimi_proxy.server.observability import setup_logging

TOKEN = "proxy-token-0123456789abcdef-0123456789"
AUTH = {"x-api-key": TOKEN}


def test_two_thousand_made_up_paths_grow_metrics_by_less_than_10_kb() -> None:
    """H1: series are labelled by route template (`other`, `refused`), never by the raw path."""
    with (
        proxy_for(lambda b, n: text_stream("ok"), auth_token=TOKEN, metrics_public=True) as proxy,
        httpx.Client(base_url=proxy.url) as client,
    ):
        client.get("/v1/models", headers=AUTH)
        before = len(client.get("/metrics").content)
        for i in range(1000):
            assert client.get(f"/made-up/{i}").status_code == 401  # refused: no token
            assert client.get(f"/made-up/{i}", headers=AUTH).status_code == 404
        for i in range(20):
            assert client.get(f"/v1/models/model-{i}", headers=AUTH).status_code == 200
        text = client.get("/metrics").text
        assert len(text.encode()) - before < 10_000
        assert "made-up" not in text and "model-3" not in text
        assert 'path="refused"' in text and 'path="other"' in text
        assert 'path="/v1/models/{model_id:path}"' in text


def raw_request(url: str, data: bytes, *, seconds: float = 5.0) -> bytes:
    """Send `data` on a fresh connection; what came back before the server closed it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=seconds) as sock:
        with contextlib.suppress(OSError):  # the server may close while we still send
            sock.sendall(data)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while piece := sock.recv(65536):
                answer += piece
        return answer


def health_ms(client: httpx.Client) -> float:
    started = time.perf_counter()
    assert client.get("/health").status_code == 200
    return (time.perf_counter() - started) * 1000


def test_an_endless_header_is_refused_431_after_64_kb_while_others_are_served() -> None:
    """H2: one 100 MB header used to cost 12 s of CPU; the head is bounded before parsing."""
    with (
        proxy_for(lambda b, n: text_stream("ok")) as proxy,
        httpx.Client(base_url=proxy.url) as client,
    ):
        probes: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                probes.append(health_ms(client))

        prober = threading.Thread(target=probe)
        # The app runs in this test process: a full collection of the whole suite's objects
        # (~0.2 s, the served proxy tunes its own collector) is not the stall looked for here.
        gc.disable()
        prober.start()
        try:
            started = time.perf_counter()
            head = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * 20_000_000
            answer = raw_request(proxy.url, head)
            elapsed = time.perf_counter() - started
        finally:
            done.set()
            prober.join()
            gc.enable()
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert elapsed < 5
        assert probes and max(probes) < 50
        many = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"x-a: 1\r\n" * 200 + b"\r\n"
        assert raw_request(proxy.url, many).startswith(b"HTTP/1.1 431 ")
        normal = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"x-a: 1\r\n" * 50 + b"\r\n"
        assert raw_request(proxy.url, normal + b"", seconds=1).startswith(b"HTTP/1.1 200 ")


def test_half_sent_heads_and_silent_sockets_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """M8: a slowloris head, or a socket that sends nothing, no longer holds a connection;
    a stream that outlasts the head's deadline is not cut."""
    monkeypatch.setattr(wire, "HEAD_TIMEOUT", 0.5)
    slow = Stream([*text_stream("slow answer").items[:2], Pause(1.0), *text_stream("!").items[1:]])
    with (
        proxy_for(lambda b, n: slow) as proxy,
        httpx.Client(base_url=proxy.url, timeout=10) as client,
    ):
        started = time.perf_counter()
        assert raw_request(proxy.url, b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n") == b""
        assert raw_request(proxy.url, b"") == b""
        assert time.perf_counter() - started < 3
        answer = client.post("/v1/messages", json={**BASIC, "stream": True})
        assert answer.status_code == 200 and "message_stop" in answer.text


@given(st.text(max_size=300))
def test_only_short_plain_ids_are_kept(value: str) -> None:
    """H4: a client's session or agent id keys usage rows, dashboard sessions and affinity."""
    kept = client_id(value)
    assert kept is None or (kept == value and 1 <= len(value) <= 128 and value.isascii())
    assert client_id("0f8c1a2e-5b7d-4c1e-9a3f-2d6b8e4c7a10") is not None


def test_an_oversized_session_id_is_served_but_never_stored() -> None:
    """H4: a 10 KB session id used to be kept for 91 days; now the request is served and the
    id dropped, and a request refused before any provider keeps no id at all."""
    huge = "s" * 10_000
    with (
        proxy_for(lambda b, n: text_stream("ok")) as proxy,
        httpx.Client(base_url=proxy.url) as client,
    ):
        answer = client.post("/v1/messages", json=BASIC, headers={"x-claude-code-session-id": huge})
        assert answer.status_code == 200
        sessions = proxy.state.feed.sessions
        assert huge not in sessions and not any(len(s) > 128 for s in sessions)
    refused = RequestRecord("r", "POST", "/v1/messages", status=429, user="ann")
    refused.session, refused.agent = "sess-1", "agent-1"
    assert not any("sess-1" in field or "agent-1" in field for field in increments(refused))


def test_client_text_cannot_forge_an_access_log_line(tmp_path: Path) -> None:
    """M3: a tool name with a line break wrote a line `usage --access-log` billed to another
    user ($4,321). Each record stays on one line, and only the access logger's lines count."""
    log_file = tmp_path / "proxy.log"
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    forged = (
        '2026-12-06 10:00:00,000 INFO kimi_proxy.access {"path":"/v1/messages","status":200,'
        '"user":"bob","cost_usd":4321.0}'
    )
    try:
        setup_logging("INFO", log_file, [])
        logging.getLogger("kimi_proxy.stream").warning("dropping a call to %s", "x\n" + forged)
        logging.getLogger("kimi_proxy.access").info(
            "%s", '{"path":"/v1/messages","status":200,"user":"ann","cost_usd":0.5}'
        )
    finally:
        for handler in root.handlers[len(before) :]:
            handler.close()
        root.handlers[:] = before
        root.setLevel(level)
        logging.getLogger("kimi_proxy.flow").setLevel(logging.NOTSET)
    lines = log_file.read_text().splitlines()
    assert len(lines) == 2 and "\\n2026-12-06" in lines[0]
    rows = list(rows_from_access_log([*lines, "x " + forged]))
    assert {row.user for row in rows} == {"ann"}


@pytest.mark.parametrize("turn", ["relayed", "agent mode", "web search"])
def test_a_cancelled_stream_is_billed_its_input_and_the_output_relayed(
    turn: str, tmp_path: Path
) -> None:
    """M6: every Esc in Claude Code used to be metered as 0 tokens and $0; agent-mode and web
    search turns (several model calls in one message) are billed the same way."""
    text = "word " * 200
    slow = Stream([*text_stream(text, pieces=50).items[:11], Pause(30)])
    options: dict[str, Any] = {}
    body: dict[str, Any] = {**BASIC, "stream": True}
    if turn == "agent mode":
        options = {"local_tools": "Read", "working_dir": tmp_path}
    elif turn == "web search":  # no backend: the model answers at once, with the tool offered
        body["tools"] = [{"type": "web_search_20250305", "name": "web_search"}]
    with proxy_for(lambda b, n: slow, **options) as proxy:
        with (
            httpx.Client(base_url=proxy.url, timeout=10) as client,
            client.stream("POST", "/v1/messages", json=body) as answer,
        ):
            seen = ""
            for line in answer.iter_lines():
                if '"text_delta"' in line and "word" in line:
                    seen += line
                if seen.count("text_delta") >= 10:
                    break  # Esc: the client closes the stream
        deadline = time.monotonic() + 10
        while not proxy.state.feed.recent:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        record = proxy.state.feed.recent[-1]
    assert record.cancelled
    assert record.input_tokens and record.input_tokens > 0  # the prompt's estimate
    relayed = len(text) * 10 // 50
    assert record.output_tokens is not None and record.output_tokens >= relayed // 4
    (row,) = [r for r in rows_from_fields("d", increments(record).items()) if r.cancelled]
    assert row.cancelled == 1


def test_a_client_that_stops_reading_is_cut_after_the_read_timeout() -> None:
    """M7: a client that never read held its stream slot and provider connection for good."""
    big = text_stream("x" * 16_000_000, pieces=4000)
    with (
        proxy_for(lambda b, n: big, read_timeout=1.0, ping_interval=0.2) as proxy,
        httpx.Client(base_url=proxy.url) as client,
    ):
        body = json.dumps({**BASIC, "stream": True}).encode()
        head = (
            b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        host, port = proxy.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.sendall(head + body)  # and never reads
            deadline = time.monotonic() + 2
            while client.get("/health").json()["active_streams"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            cut = time.monotonic() + 10
            while client.get("/health").json()["active_streams"]:
                assert time.monotonic() < cut, "the stalled stream kept its slot"
                time.sleep(0.1)
        assert health_ms(client) < 50


def test_the_debug_log_is_private_and_holds_prompts_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Low: world-readable logs at fixed /tmp paths, the debug log with full prompts."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        with proxy_for(lambda b, n: text_stream("the answer"), debug=True) as proxy:
            configure_logging(proxy.settings)
            prompt = {**BASIC, "messages": [{"role": "user", "content": "my secret plan"}]}
            assert httpx.post(f"{proxy.url}/v1/messages", json=prompt).status_code == 200
    finally:
        for handler in root.handlers[len(before) :]:
            handler.close()
        root.handlers[:] = before
        root.setLevel(level)
        logging.getLogger("kimi_proxy.flow").setLevel(logging.NOTSET)
    log_file = tmp_path / "state" / "kimi-proxy" / "debug.log"
    assert log_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state" / "kimi-proxy").stat().st_mode & 0o777 == 0o700
    written = log_file.read_text()
    assert "kimi_proxy.access" in written  # the debug log is on
    assert "my secret plan" not in written and "the answer" not in written


def test_credentials_in_a_provider_url_are_never_shown() -> None:
    """Low: a provider URL with credentials was repeated in the errors clients read."""
    refused = httpx.ConnectError("connection refused")
    error = error_from_transport(refused, upstream="https://ann:hunter2@llm.example/v1")
    assert "hunter2" not in error.message and "llm.example/v1" in error.message


@contextlib.contextmanager
def fast_upstream() -> Iterator[str]:
    """The benchmark's provider in its own process: it reads no body, so what stalls the
    proxy's loop is the proxy's own work."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", str(port)],
        cwd=Path(__file__).parents[2],
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert process.poll() is None and time.monotonic() < deadline, "no upstream"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(10)


def one_provider(upstream_url: str) -> dict[str, str]:
    return {"KIMI_UPSTREAM_URL": upstream_url, "KIMI_API_KEY": "k", "KIMI_MODEL": "kimi-big"}


def tool_session(round_trips: int) -> dict[str, Any]:
    """A Claude Code-like history of many small tool calls: ~16 values each."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i in range(round_trips):
        use = {"type": "tool_use", "id": f"t{i}", "name": "Read", "input": {"file_path": "/a"}}
        result = {"type": "tool_result", "tool_use_id": f"t{i}", "content": "x"}
        messages += [{"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]
    messages.append({"role": "user", "content": "and now?"})
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages}


def test_a_body_of_much_structure_never_stalls_the_others(tmp_path: Path) -> None:
    """H3: 30,000 one-character messages held the event loop 140 ms in one pydantic call, and
    32 MB of them for seconds. Now a body's structure is counted as it arrives (over
    KIMI_MAX_BODY_VALUES: 413 before parsing), and a large one is validated a piece at a time
    and translated on a worker thread, while `/health` answers within 50 ms. (Inline, twice the
    default limit's structure held the loop ~100 ms here.)"""
    session = tool_session(6_000)  # ~96,000 values, under the limit set below
    invalid = tool_session(2_000)
    invalid["messages"][3_001]["role"] = "robot"
    dense = {"model": "claude-sonnet-4-5", "max_tokens": 1}  # 60 KB: too small to be counted
    bodies = [
        ("/v1/messages", orjson.dumps({**session, "stream": True})),
        ("/v1/messages/count_tokens", orjson.dumps(session)),
        ("/v1/messages", orjson.dumps(session)),
        ("/v1/messages", orjson.dumps({**session, "messages": [{"role": "user"}] * 200_000})),
        ("/v1/messages", orjson.dumps(invalid)),
        (
            "/v1/messages",
            orjson.dumps({**dense, "messages": [{"role": "user", "content": [{}] * 20_000}]}),
        ),
    ]
    del session, invalid
    headers = {"x-api-key": "any", "content-type": "application/json"}
    with (
        fast_upstream() as upstream_url,
        instances(tmp_path, 1, **one_provider(upstream_url), KIMI_MAX_BODY_VALUES="120000") as (
            proxy,
        ),
    ):
        client = httpx.Client(base_url=proxy.url, timeout=60, headers=headers)
        prober_client = httpx.Client(base_url=proxy.url)
        probes: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                probes.append(health_ms(prober_client))

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            streamed, counted, answered, refused, wrong, empty_blocks = (
                client.post(path, content=body) for path, body in bodies
            )
        finally:
            done.set()
            prober.join()
        assert streamed.status_code == 200 and "message_stop" in streamed.text
        assert counted.status_code == 200 and counted.json()["input_tokens"] > 1_000
        assert answered.status_code == 200 and answered.json()["content"]
        assert refused.status_code == 413
        assert "KIMI_MAX_BODY_VALUES" in refused.json()["error"]["message"]
        assert wrong.status_code == 400
        assert wrong.json()["error"]["message"].startswith("messages.3001.role: ")
        assert empty_blocks.status_code == 400  # 20,000 blocks without a type, found off the loop
        assert empty_blocks.json()["error"]["message"].startswith("messages.0.content.0")
        assert len(probes) > 10 and max(probes) < 50, sorted(probes)[-5:]
        client.close()
        prober_client.close()
