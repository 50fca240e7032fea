"""The SSE response: keep-alive pings, and cleanup that always happens.

`EventStreamResponse` streams the body the moment each piece exists. A timer (not a task)
checks for silence: when nothing was sent for `ping_interval` seconds — the provider is
thinking — a `ping` event goes out, so clients and idle proxies keep the stream open. One
listener waits for the client's disconnect and cancels the body at once; whatever happened,
`on_close` runs afterwards, so the upstream response is closed even when the client left before
the first byte and no provider connection keeps generating tokens for nobody.

Measured (bench/): Starlette's `StreamingResponse` runs the body and the listener in an anyio
task group and this class added a keep-alive task; three tasks per stream cost ~0.09 ms before
the first byte. Here the body runs in the request's own task beside one listener task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from kimi_proxy.errors import DrainingError, render_sse
from kimi_proxy.upstream.client import close_shielded

from .at_once import Rest, step

PING_FRAME = b'event: ping\ndata: {"type":"ping"}\n\n'
CUT_FRAME = render_sse(
    DrainingError(
        "This kimi-proxy instance shut down before the answer finished (its drain period ran "
        "out); send the request again."
    )
)
#: The stream's headers, encoded once (Starlette's `init_headers` encoded them per stream).
SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)

log = logging.getLogger("kimi_proxy.streaming")


async def _disconnect(receive: Receive) -> None:
    """Return when the client has gone (the request body was read before the response)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Drain:
    """The streams a drain may have to end at its deadline (`cut_all`), without a task or a
    waiter per stream: a stream registers its own task while it runs."""

    def __init__(self) -> None:
        self.streams: set[asyncio.Task[Any]] = set()
        self.cut = False

    def cut_all(self) -> None:
        self.cut = True
        for task in list(self.streams):
            task.cancel()


def _end() -> Message:
    """The body's end: it carries nothing (`ObservabilityMiddleware` finishes the record on it)."""
    return {"type": "http.response.body", "body": b"", "more_body": False}


def _body(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


class BodyWriter:
    """Sends pieces of the body from a plain callback (the provider connection's read
    callback, `UpstreamClient.relay`): no task step per piece.

    An ASGI `send` is a coroutine; the server's returns without waiting unless the client is
    behind on reading (uvicorn waits for its socket to drain). `write` runs it to that point
    at once. When it does wait, a task finishes it, pieces written meanwhile queue behind it,
    and `write` returns the future of that flush so the reader can stop reading until then.
    """

    def __init__(self) -> None:
        self.last_sent = 0.0  # loop time of the last piece: the keep-alive timer reads it
        self._send: Send | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: list[bytes] = []
        self._flushed: asyncio.Future[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._held = b""  # goes out with the next piece (`hold`)
        #: Since when a piece has waited for the client (its socket full); None: none waits.
        self.waiting_since: float | None = None

    def bind(self, send: Send) -> None:
        self._send = send
        self._loop = asyncio.get_running_loop()
        self.last_sent = self._loop.time()

    def hold(self, data: bytes) -> None:
        """Send `data` with the next piece, or on its own at the end of this loop step: a
        stream's `message_start` goes out with a first delta that came with the provider's
        headers, in one write (`wire.HeadWithBody` adds the response's head to it)."""
        assert self._loop is not None, "bind first"
        self._held += data
        self._loop.call_soon(self.release)

    def release(self) -> None:
        """Send what is held now, if anything."""
        if self._held and self._error is None:
            self.write(b"")

    def with_held(self, data: bytes) -> bytes:
        """`data` after what is held (a piece sent other than by `write`), which is let go."""
        held, self._held = self._held, b""
        return held + data if held else data

    def write(self, data: bytes) -> asyncio.Future[None] | None:
        """Send `data` now; a future when it has to wait for the client (see the class)."""
        if self._error is not None:
            raise self._error
        if self._held:
            data = self.with_held(data)
        if self._flushed is not None:
            self._backlog.append(data)
            return self._flushed
        assert self._send is not None and self._loop is not None, "bind first"
        self.last_sent = self._loop.time()
        sent = step(self._send(_body(data)))
        if not isinstance(sent, Rest):
            return None
        self._flushed = self._loop.create_future()
        self._flushing = self._loop.create_task(self._finish(sent.rest))
        self.waiting_since = self.last_sent
        return self._flushed

    async def drained(self) -> None:
        """Until everything written has been handed to the server (errors are `write`'s)."""
        if self._flushed is not None:
            await asyncio.wait([self._flushed])

    def close(self) -> None:
        self._held = b""  # the stream is over: nothing more goes out from here
        if self._flushing is not None:
            self._flushing.cancel()

    async def _finish(self, rest: Awaitable[None]) -> None:
        flushed = self._flushed
        assert flushed is not None and self._send is not None
        try:
            await rest
            while self._backlog:
                data = b"".join(self._backlog)
                self._backlog.clear()
                await self._send(_body(data))
        except Exception as exc:  # the client's connection failed: the next write raises it
            self._error = exc
        finally:
            self._flushed = self._flushing = None
            self.waiting_since = None
            flushed.set_result(None)


class EventStreamResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        ping_interval: float,
        on_close: Callable[[], Awaitable[None]],
        drain: Drain | None = None,
        writer: BodyWriter | None = None,
        stall_timeout: float = 120.0,
    ) -> None:
        # Not `StreamingResponse.__init__`: its headers are always these (see SSE_HEADERS).
        self.body_iterator = content
        self.status_code = 200
        self.media_type = "text/event-stream"
        self.background = None
        self.raw_headers = list(SSE_HEADERS)
        self._ping_interval = ping_interval
        self._on_close = on_close
        self.writer = writer or BodyWriter()  # the body's pieces pushed outside `content`
        self._timer: asyncio.TimerHandle | None = None
        self._pinging: set[asyncio.Task[None]] = set()
        self._drain = drain
        #: A client that takes nothing for this long (its socket full) is cut off, its slot
        #: and provider connection freed: `_check` looks on each tick at how long the body
        #: writer, or a piece of `content`, has waited for the client.
        self._stall_timeout = stall_timeout
        self._sending_since: float | None = None  # a piece of `content` waiting for the client
        self._stalled = False
        self._cut_stalled: Callable[[], object] = lambda: None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = asyncio.current_task()
        assert body is not None
        client_left = closed = False

        def on_disconnect(listener: asyncio.Future[None]) -> None:
            nonlocal client_left
            if not closed and not listener.cancelled():
                client_left = True
                body.cancel()

        async def close() -> None:
            """The stream's cleanup, once, whatever happened: the listener, the pings, the
            body (`on_close`: the provider's response closed, the slot let go). A stream that
            ends normally runs it before writing the body's end (`_stream`)."""
            nonlocal closed
            if closed:
                return
            closed = True
            listener.cancel()
            if drain is not None:
                drain.streams.discard(body)
            self._stop_pings()
            self.writer.close()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await close_shielded(aclose)
            await close_shielded(self._on_close)

        self._cut_stalled = body.cancel
        listener = asyncio.ensure_future(_disconnect(receive))
        listener.add_done_callback(on_disconnect)
        drain = self._drain
        if drain is not None:
            drain.streams.add(body)
        try:
            await self._stream(send, close)
        except asyncio.CancelledError:
            cut = drain is not None and drain.cut and not client_left
            gone = client_left or self._stalled
            if not (gone or cut) or body.uncancel():  # cancelled by someone else: obey
                raise
            if self._stalled:
                log.warning(
                    "a client took nothing of its stream for %.0f s: stream cut",
                    self._stall_timeout,
                )
            if cut:  # the drain's deadline: say so, and end the body properly
                await close()
                await send(_body(CUT_FRAME))
                await send(_end())
        finally:
            await close()

    async def _stream(self, send: Send, close: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        writer = self.writer
        writer.bind(send)
        self._timer = loop.call_at(writer.last_sent + self._ping_interval, self._check, send)
        async for chunk in cast(AsyncIterator[bytes], self.body_iterator):
            self._sending_since = loop.time()  # (no wrapper around `send`: the hot path)
            body = writer.with_held(chunk)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            self._sending_since = None
            writer.last_sent = loop.time()
        # Closed before the end is written: the client sends its next request once the end
        # arrives, and this work would stand in its way (and the record is final for the
        # access log, which `ObservabilityMiddleware` writes on seeing this end).
        await close()
        await send(_end())

    def _check(self, send: Send) -> None:
        """The timer: cut a client stuck past the stall timeout; ping if the stream was silent
        for a whole interval; re-arm."""
        loop = asyncio.get_running_loop()
        since = self.writer.waiting_since if self._sending_since is None else self._sending_since
        if since is not None and loop.time() - since > self._stall_timeout:
            self._stalled = True
            self._timer = None
            self.writer.close()  # the piece stuck in the socket: let go, so nothing waits on it
            self._cut_stalled()
            return
        writer = self.writer
        if loop.time() - writer.last_sent >= self._ping_interval * 0.999:
            task = loop.create_task(self._ping(send))
            self._pinging.add(task)
            task.add_done_callback(self._pinging.discard)
            writer.last_sent = loop.time()
        self._timer = loop.call_at(writer.last_sent + self._ping_interval, self._check, send)

    async def _ping(self, send: Send) -> None:
        await send(_body(self.writer.with_held(PING_FRAME)))

    def _stop_pings(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._pinging:
            task.cancel()
