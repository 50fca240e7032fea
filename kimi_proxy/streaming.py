"""The SSE response: keep-alive pings, and cleanup that always happens.

`EventStreamResponse` streams the body the moment each piece exists. It keeps one timer task
per stream (not per chunk): when nothing was sent for `ping_interval` seconds — the provider is
thinking — it sends a `ping` event, so clients and idle proxies keep the stream open. Starlette
watches for the client's disconnect and cancels the body at once; whatever happened, `on_close`
runs afterwards, so the upstream response is closed even when the client left before the first
byte and no provider connection keeps generating tokens for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

PING_FRAME = b'event: ping\ndata: {"type":"ping"}\n\n'
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def close_shielded(close: Callable[[], Awaitable[None]]) -> None:
    """Run a close even inside a cancelled scope (Starlette cancels on client disconnect):
    there every await would be cancelled again, leaving the provider's stream open."""
    with anyio.CancelScope(shield=True):
        await close()


class EventStreamResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        ping_interval: float,
        on_close: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
        )
        self._ping_interval = ping_interval
        self._on_close = on_close
        self._last_sent = 0.0

    async def stream_response(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        self._last_sent = loop.time()
        keepalive = asyncio.create_task(self._keepalive(send))
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._last_sent = loop.time()
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _keepalive(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._last_sent + self._ping_interval - loop.time())
            if loop.time() - self._last_sent >= self._ping_interval:
                await send({"type": "http.response.body", "body": PING_FRAME, "more_body": True})
                self._last_sent = loop.time()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await close_shielded(aclose)
            await close_shielded(self._on_close)
