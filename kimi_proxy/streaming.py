"""Streaming plumbing for the routes: keep-alive pings and an SSE response that always cleans up.

`EventStreamResponse` runs Starlette's streaming (which watches for the client's disconnect and
cancels the body iterator at once) and then, whatever happened, runs `on_close`: the upstream
response is closed even when the client left before the first byte, so no provider connection
keeps generating tokens for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")

PING_FRAME = b'event: ping\ndata: {"type":"ping"}\n\n'
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def with_pings(source: AsyncIterator[T], interval: float) -> AsyncGenerator[T | None, None]:
    """Items of `source`; `None` whenever it has been silent for `interval` seconds."""
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait((pending,), timeout=interval)
            if not done:
                yield None
                continue
            finished, pending = pending, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        # Shielded: under Starlette's cancelled task group every await would be cancelled
        # again, leaving the provider's stream open.
        with anyio.CancelScope(shield=True):
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                    await pending
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()


async def close_shielded(close: Callable[[], Awaitable[None]]) -> None:
    """Run a close even inside a cancelled scope (Starlette cancels on client disconnect)."""
    with anyio.CancelScope(shield=True):
        await close()


class EventStreamResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        on_close: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            await self._on_close()
