"""A scripted OpenAI-compatible upstream that streams as fast as it can: raw asyncio + httptools.

`POST /v1/chat/completions` answers with pre-encoded chunks: a role chunk, `chunks` content
chunks of `size` characters each, a finish chunk, a usage chunk and `[DONE]` (chunked transfer
encoding, keep-alive). With `interval` > 0 the content chunks are paced that many seconds apart;
with 0 they are written back to back (one `write` each, yielding to the loop in between so many
streams interleave, and honouring the transport's flow control). A body containing
`"stream":false` gets one JSON completion instead.

The benchmark drives it over HTTP: `POST /_bench/config` with `{"chunks", "size", "interval"}`
sets the script for the following requests, `GET /_bench/stats` returns counters.

    python -m bench.upstream --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any, cast

import httptools
import orjson

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_END = b"0\r\n\r\n"


def _frame(payload: bytes) -> bytes:
    """One HTTP chunk holding one SSE event."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def _json_response(status: int, body: Any) -> bytes:
    data = orjson.dumps(body)
    reason = b"OK" if status == 200 else b"Error"
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        reason,
        len(data),
        data,
    )


class Script:
    """Pre-encoded replies for the current configuration."""

    def __init__(self, chunks: int = 100, size: int = 16, interval: float = 0.0) -> None:
        self.chunks = chunks
        self.size = size
        self.interval = interval
        base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1}
        base["model"] = "bench-model"
        words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            body = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return _frame(orjson.dumps({**body, **extra}))

        texts = [(words * (size // len(words) + 2))[i % 13 : i % 13 + size] for i in range(16)]
        self.head = _SSE_HEAD + chunk({"role": "assistant", "content": ""})
        self.content = [chunk({"content": texts[i % len(texts)]}) for i in range(chunks)]
        usage = {"prompt_tokens": 12000, "completion_tokens": chunks}
        usage["total_tokens"] = 12000 + chunks
        tail = chunk({}, "stop") + _frame(orjson.dumps({**base, "choices": [], "usage": usage}))
        self.tail = tail + _frame(b"[DONE]") + _END
        text = "".join(texts[i % len(texts)] for i in range(chunks))
        self.completion = _json_response(
            200,
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 1,
                "model": "bench-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )


class Stats:
    connections = 0
    requests = 0
    streams_started = 0  # each read its script as it started
    streams_done = 0
    streams_cut = 0


class UpstreamProtocol(asyncio.Protocol):
    script: Script = Script()

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.task: asyncio.Task[None] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.closed = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        Stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        body = b"".join(self.body)
        previous = self.task
        self.task = asyncio.get_running_loop().create_task(
            self.handle(method, self.url, body, previous)
        )

    # -- replies
    async def handle(
        self, method: bytes, url: bytes, body: bytes, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        transport = self.transport
        assert transport is not None
        if self.closed:
            return
        Stats.requests += 1
        path = url.split(b"?", 1)[0]
        if path.endswith(b"/chat/completions") and method == b"POST":
            if b'"stream":false' in body:
                transport.write(self.script.completion)
            else:
                await self.stream(transport)
        elif path == b"/_bench/config" and method == b"POST":
            config = orjson.loads(body)
            UpstreamProtocol.script = Script(**config)
            transport.write(_json_response(200, {"ok": True, **config}))
        elif path == b"/_bench/stats":
            names = ("connections", "requests", "streams_started", "streams_done", "streams_cut")
            stats = {k: getattr(Stats, k) for k in names}
            transport.write(_json_response(200, stats))
        elif path == b"/health":
            transport.write(_json_response(200, {"status": "ok"}))
        else:
            transport.write(_json_response(404, {"error": {"message": "not found"}}))

    async def stream(self, transport: asyncio.Transport) -> None:
        script = self.script
        Stats.streams_started += 1
        transport.write(script.head)
        interval = script.interval
        for i, frame in enumerate(script.content):
            if interval and i:
                await asyncio.sleep(interval)
            else:
                await asyncio.sleep(0)
            if self.writable is not None:
                await self.writable
            if self.closed:
                Stats.streams_cut += 1
                return
            transport.write(frame)
        transport.write(script.tail)
        Stats.streams_done += 1


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096)
    print(f"bench upstream on http://{host}:{port}/v1 ({time.strftime('%X')})", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port))


if __name__ == "__main__":
    main()
