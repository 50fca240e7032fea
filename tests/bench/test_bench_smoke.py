"""The benchmark's own pieces: a Claude-Code-shaped workload, a load client that keeps its
connections, a floor that relays bytes untouched (fast: in-process servers, no benchmark)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import loadgen, passthrough, upstream  # noqa: E402
from bench.workload import anthropic_request, openai_request  # noqa: E402
from kimi_proxy.protocol.anthropic import MessagesRequest, ToolResultBlock  # noqa: E402


def test_request_has_claude_code_size_and_shape() -> None:
    body = anthropic_request()
    size = len(orjson.dumps(body))
    assert 45_000 <= size <= 55_000
    assert body["stream"] is True
    assert len(body["system"]) == 3
    assert len(body["tools"]) == 12
    assert all(tool["input_schema"]["type"] == "object" for tool in body["tools"])
    assert sum(len(orjson.dumps(tool["input_schema"])) for tool in body["tools"]) > 10_000
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user" and roles[-1] == "user" and "assistant" in roles
    results = [
        block
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == "tool_result"
    ]
    assert len(results) >= 2


def test_request_validates_as_a_messages_request() -> None:
    parsed = MessagesRequest.model_validate(anthropic_request())
    assert parsed.tools is not None and len(parsed.tools) == 12
    assert isinstance(parsed.system, list) and len(parsed.system) == 3
    blocks = [b for m in parsed.messages if isinstance(m.content, list) for b in m.content]
    assert any(isinstance(b, ToolResultBlock) for b in blocks)


def test_generator_is_deterministic_and_direct_body_is_comparable() -> None:
    body = anthropic_request(stream=False)
    assert body == anthropic_request(stream=False)
    translated = openai_request(body)
    assert translated["stream"] is False
    assert any(m["role"] == "tool" for m in translated["messages"])
    ratio = len(orjson.dumps(translated)) / len(orjson.dumps(body))
    assert 0.8 <= ratio <= 1.2


@contextlib.asynccontextmanager
async def bench_upstream(script: upstream.Script) -> AsyncIterator[int]:
    """The benchmark's scripted upstream in this event loop, on a free port, playing `script`."""
    server = await asyncio.get_running_loop().create_server(
        upstream.UpstreamProtocol, "127.0.0.1", 0
    )
    upstream.UpstreamProtocol.script = script
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        upstream.UpstreamProtocol.script = upstream.Script()


async def test_load_client_keeps_its_connections_alive(tmp_path: Path) -> None:
    """One connection per concurrent worker for the whole level: a client that reconnected
    for every request would charge each side a TCP and HTTP handshake per request."""
    before = upstream.Stats.connections
    body = tmp_path / "body.json"
    body.write_bytes(orjson.dumps(openai_request()))
    async with bench_upstream(upstream.Script(chunks=5, size=8)) as port:
        result = await loadgen.run(
            {
                "side": "direct",
                "stream": True,
                "concurrency": 2,
                "requests": 10,
                "max_seconds": 10,
                "expected_events": 5,
                "body_file": str(body),
                "host": "127.0.0.1",
                "port": port,
            }
        )
    assert result["ok"] == 10 and result["errors"] == 0
    assert upstream.Stats.connections - before == 2


async def test_pass_through_floor_forwards_the_stream_untouched() -> None:
    """The floor the proxy is compared with relays the upstream's bytes as they are."""
    script = upstream.Script(chunks=3, size=8)
    async with bench_upstream(script) as port:
        url = f"http://127.0.0.1:{port}/v1"
        async with passthrough.provider_transport(url) as provider:
            floor = httpx.ASGITransport(app=passthrough.passthrough_app(provider, url))
            async with httpx.AsyncClient(transport=floor, base_url="http://floor") as client:
                reply = await client.post("/v1/chat/completions", content=b'{"stream":true}')
    events = [frame.split(b"\r\n", 1)[1][:-2] for frame in script.content]  # chunked framing off
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/event-stream"
    assert all(event in reply.content for event in events)
    assert reply.content.endswith(b"data: [DONE]\n\n")
