"""The real server, driven by the official anthropic SDK and by raw HTTP."""

from __future__ import annotations

import gzip
import json
import socket
import time
from typing import Any

import httpx
from support.proxy import TEST_KEY, Harness, proxy_for
from support.sse_client import BASIC, parse_sse, post_stream
from support.streams import check_grammar, comparable_blocks
from support.upstream import (
    Pause,
    Raw,
    Stream,
    chunk,
    completion,
    text_stream,
    tool_stream,
    usage,
)

from kimi_proxy.providers import KIMI_K2

TOOLS: list[Any] = [
    {
        "name": "Read",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
    },
    {
        "name": "Bash",
        "description": "Run a command",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
    },
]


def _same_reply(proxy: Harness, script: Any, **kwargs: Any) -> None:
    """The SDK's streamed final message equals the non-stream reply for the same script."""
    proxy.upstream.script = script
    client = proxy.client()
    with client.messages.stream(**kwargs) as stream:
        streamed = stream.get_final_message()
    plain = client.messages.create(**kwargs)
    assert comparable_blocks(streamed.content) == comparable_blocks(plain.content)
    assert streamed.stop_reason == plain.stop_reason
    assert streamed.model == plain.model == kwargs["model"]
    assert streamed.id != plain.id
    assert streamed.usage.output_tokens > 0


def test_text_stream_and_non_stream_agree(proxy: Harness) -> None:
    _same_reply(
        proxy,
        lambda b, n: text_stream("The quick brown fox jumps over the lazy dog."),
        model="claude-opus-5-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
    )
    assert proxy.upstream.bodies[0]["model"] == "kimi-big"
    assert proxy.upstream.bodies[0]["stream"] is True
    assert proxy.upstream.bodies[1]["stream"] is False


def test_sdk_text_stream_yields_text_live(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: text_stream("one two three four", pieces=4)
    with proxy.client().messages.stream(
        model="claude-sonnet-5-5", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    ) as s:
        pieces = list(s.text_stream)
    assert "".join(pieces) == "one two three four"
    assert len(pieces) == 4


def test_tool_calls_in_fragments_and_parallel(proxy: Harness) -> None:
    calls = [("Read", {"file_path": "/etc/hosts"}), ("Bash", {"command": "ls -la"})]
    _same_reply(
        proxy,
        lambda b, n: tool_stream(calls, text="Let me look.", fragments=4),
        model="claude-opus-5-5",
        max_tokens=100,
        tools=TOOLS,
        messages=[{"role": "user", "content": "look"}],
    )
    message = proxy.client().messages.create(
        model="claude-opus-5-5",
        max_tokens=100,
        tools=TOOLS,
        messages=[{"role": "user", "content": "look"}],
    )
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == calls
    assert message.stop_reason == "tool_use"
    assert len({u.id for u in uses}) == 2


def test_reasoning_becomes_thinking_block(proxy: Harness) -> None:
    _same_reply(
        proxy,
        lambda b, n: text_stream("42", reasoning="Let me think."),
        model="claude-opus-5-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "answer"}],
    )
    message = proxy.client().messages.create(
        model="claude-opus-5-5", max_tokens=100, messages=[{"role": "user", "content": "answer"}]
    )
    assert [b.type for b in message.content] == ["thinking", "text"]


def test_beta_query_and_small_model(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: text_stream("ok")
    message = proxy.client().beta.messages.create(
        model="claude-haiku-5-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert message.model == "claude-haiku-5-5"
    assert proxy.upstream.bodies[-1]["model"] == "kimi-small"


def test_event_level_stream(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: tool_stream([("Read", {"file_path": "a"})], text="hi")
    response, events = post_stream(proxy.url, {**BASIC, "tools": TOOLS})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b"[DONE]" not in response.content
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert check_grammar([data for _, data in events]) == ["text", "tool_use"]
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert [d["type"] for d in deltas].count("input_json_delta") == 3
    assert events[-2][1]["usage"]["input_tokens"] == 10


def test_upstream_request_carries_key_and_usage_option(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: text_stream("ok")
    post_stream(proxy.url, BASIC)
    record = proxy.upstream.requests[-1]
    assert record.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert record.body["stream_options"] == {"include_usage": True}


def test_ping_while_upstream_is_silent() -> None:
    from support.proxy import proxy_for

    def slow(body: Any, n: int) -> Stream:
        return Stream(
            [
                chunk({"role": "assistant", "content": ""}),
                Pause(1.2),
                chunk({"content": "late"}),
                chunk({}, finish="stop", usage=usage()),
            ]
        )

    with proxy_for(slow, ping_interval=0.3) as proxy:
        _, events = post_stream(proxy.url, BASIC)
    names = [n for n, _ in events]
    assert names.count("ping") >= 2
    assert names.index("ping") > names.index("message_start")
    assert names[-1] == "message_stop"


def test_count_tokens_counts_system_and_tools(proxy: Harness) -> None:
    with httpx.Client() as client:
        bare = client.post(
            f"{proxy.url}/v1/messages/count_tokens?beta=true",
            json={"model": "claude-opus-5-5", "messages": BASIC["messages"]},
        )
        full = client.post(
            f"{proxy.url}/v1/messages/count_tokens",
            json={
                "model": "claude-opus-5-5",
                "messages": BASIC["messages"],
                "system": "You are a careful assistant. " * 20,
                "tools": TOOLS,
            },
        )
    assert bare.status_code == full.status_code == 200
    assert 0 < bare.json()["input_tokens"] < full.json()["input_tokens"]
    assert full.json()["input_tokens"] > 150
    sdk_count = proxy.client().messages.count_tokens(
        model="claude-opus-5-5", messages=[{"role": "user", "content": "hi"}], tools=TOOLS
    )
    assert sdk_count.input_tokens > bare.json()["input_tokens"]


def test_count_tokens_counts_an_image_only_for_a_model_that_is_sent_it(proxy: Harness) -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    body = {
        "model": "claude-opus-5-5",
        "messages": [{"role": "user", "content": [{"type": "image", "source": png}]}],
    }
    with proxy_for(lambda b, n: text_stream("unused"), model=KIMI_K2) as text_only:
        counts = [
            httpx.post(f"{url}/v1/messages/count_tokens", json=body).json()["input_tokens"]
            for url in (proxy.url, text_only.url)
        ]
    assert counts[0] > 1_600 > 20 > counts[1] > 0, counts


def test_claude_code_request_is_served(proxy: Harness) -> None:
    from pathlib import Path

    fixture = Path(__file__).parents[1] / "fixtures" / "claude_code" / "first_request.json"
    body = json.loads(fixture.read_text())
    proxy.upstream.script = lambda b, n: text_stream("Hello")
    response, events = post_stream(proxy.url, body)
    assert response.status_code == 200, response.text
    assert check_grammar([d for _, d in events]) == ["text"]
    sent = proxy.upstream.bodies[-1]
    assert sent["max_tokens"] <= 16384
    assert "DeferredToolPlaceholder" not in json.dumps(sent["tools"])
    assert sent["messages"][0]["role"] == "system"


def test_models_and_health(proxy: Harness) -> None:
    with httpx.Client() as client:
        models = client.get(f"{proxy.url}/v1/models").json()
        health = client.get(f"{proxy.url}/health")
        hello = client.head(f"{proxy.url}/api/hello")
    ids = [m["id"] for m in models["data"]]
    assert all("claude" in i for i in ids) and models["has_more"] is False
    assert health.status_code == 200 and hello.status_code == 200
    assert health.json()["api_key_configured"] is True
    assert TEST_KEY not in health.text
    page = proxy.client().models.list()
    assert [m.id for m in page.data] == ids


def test_provider_cookies_are_not_carried_to_the_next_request(proxy: Harness) -> None:
    """One client serves every user: a cookie set on one user's reply stays out of the next."""
    reply = completion("hi")
    reply.headers["set-cookie"] = "__cf_bm=user-a; Path=/; HttpOnly"
    proxy.upstream.script = lambda b, n: reply
    client = proxy.client()
    for _ in range(2):
        client.messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert [r.headers.get("cookie") for r in proxy.upstream.requests[-2:]] == [None, None]


def test_a_provider_stream_compressed_anyway_is_decoded(proxy: Harness) -> None:
    """The proxy asks for no compression (so chunks are not held back); a provider that
    gzips its stream regardless is still understood."""
    frames = b"".join(
        b"data: " + json.dumps(item).encode() + b"\n\n" for item in text_stream("hi").items
    )
    body = gzip.compress(frames + b"data: [DONE]\n\n")
    proxy.upstream.script = lambda b, n: Raw(
        body, content_type="text/event-stream", headers={"content-encoding": "gzip"}
    )
    response, events = post_stream(proxy.url, BASIC)
    assert response.status_code == 200
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert (text, events[-1][0]) == ("hi", "message_stop")
    assert "accept-encoding" not in proxy.upstream.requests[-1].headers


def test_a_client_reading_slowly_gets_the_whole_answer_in_order() -> None:
    """A client behind on reading: the proxy's writes wait for it and the provider is read no
    faster (BodyWriter, Connection.push), and nothing is lost or reordered."""
    piece = "0123456789abcdef" * 256  # 4 KB a chunk, 8 MB in all: far over every buffer
    text = "".join(f"{n:08d}{piece[8:]}" for n in range(2048))
    with proxy_for(lambda b, n: text_stream(text, pieces=2048)) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        body = json.dumps({**BASIC, "stream": True}).encode()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.connect((host, int(port)))
            sock.sendall(
                b"POST /v1/messages HTTP/1.1\r\nhost: %s:%s\r\ncontent-type: application/json\r\n"
                b"x-api-key: anything\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                % (host.encode(), port.encode(), len(body), body)
            )
            received = bytearray(sock.recv(4096))
            time.sleep(0.5)  # behind: the proxy's socket and buffers fill up
            while data := sock.recv(65536):
                received += data
    head, _, chunked = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    events = parse_sse(_dechunk(chunked))
    texts = [e["delta"]["text"] for name, e in events if name == "content_block_delta"]
    assert "".join(texts) == text
    assert events[-1][0] == "message_stop"


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            break
        out += rest[:length]
        body = rest[length + 2 :]
    return bytes(out)
