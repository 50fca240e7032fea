"""One keep-alive HTTP/1.1 connection to a provider, as an asyncio protocol parsed by
httptools: it sends a request, reads the head, and hands the body on pulled (`body`) or pushed
(`push`), pausing the socket while the consumer is behind (see `transport.py` for the whole).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httptools
import httpx

from .tunnel import Origin

HIGH_WATER = 64 * 1024  # bytes waiting for the consumer before reading pauses (per stream)
MAX_HEAD_BYTES = 64 * 1024  # status line and headers: an answer whose head is longer is refused
Consumer = Callable[[bytes], "asyncio.Future[None] | None"]


class StopPushing(Exception):
    """Raised by a push consumer that needs no more of the body (it read the stream's end)."""


class _Deadline:
    """Fail a waiter with `error` after `seconds` (None: never), cheaper than asyncio.timeout:
    for the rare waits (a paused write)."""

    __slots__ = ("_handle",)

    def __init__(self, waiter: asyncio.Future[None], seconds: float | None, error: Exception):
        self._handle = (
            None
            if seconds is None
            else asyncio.get_running_loop().call_later(seconds, _fail, waiter, error)
        )

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def _fail(waiter: asyncio.Future[None], error: Exception) -> None:
    if not waiter.done():
        waiter.set_exception(error)


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to the provider; one request at a time."""

    def __init__(self, origin: Origin, on_lost: Callable[[Connection], None]) -> None:
        self.origin = origin
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_timeout: float | None = None
        self._quiet_since = 0.0
        self._consumer: Consumer | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.received_any = False
        self.complete = False
        self.error: Exception | None = None
        self._informational = False
        self._until_close = False
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._head_bytes = 0
        self._stopped = False

    # -- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        self.gone: asyncio.Future[None] = self._loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._quiet_since = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(httpx.RemoteProtocolError(f"The provider's answer is not HTTP: {exc}"))
            self.close()
            return
        consumer = self._consumer
        if consumer is not None and self._body:
            self._deliver(consumer)
            return
        if not self.status:  # still in the head: a never-ending one must not grow forever
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._broken(
                    httpx.RemoteProtocolError(
                        f"The provider's answer has a header block over {MAX_HEAD_BYTES} bytes."
                    )
                )
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.gone.done():
            self.gone.set_result(None)
        self._stop_timer()
        self._on_lost(self)
        if self.status and self._until_close and not self.complete:
            self.complete = True  # a body delimited by the connection's close has ended
            self._wake()
        elif not self.complete:
            message = (
                "The provider closed the connection before the answer was complete."
                if self.status
                else "The provider closed the connection without answering."
            )
            self._broken(httpx.RemoteProtocolError(message))
        if self._writable is not None:
            _fail(self._writable, httpx.WriteError("The provider closed the connection."))

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- httptools
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): skip it
            self._informational = True
            self.headers = []
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        names = {name.lower() for name, _ in self.headers}
        self._until_close = b"content-length" not in names and b"transfer-encoding" not in names
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._consumer is not None:
            return  # pushed when the read is parsed: what arrived together goes together
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._wake()

    def _deliver(self, consumer: Consumer) -> None:
        """What one network read brought of the body, to the pushing consumer, in the read
        callback itself."""
        try:
            wait = consumer(self._take_body())
        except StopPushing:
            self._consumer = None
            self._stopped = True
            self._wake()
            return
        except Exception as exc:  # the consumer's failure ends the push with it
            self._consumer = None
            self._broken(exc)
            return
        if wait is None or wait.done() or self.transport is None:
            return
        if not self._paused:
            self._paused = True  # the consumer is behind (a slow client): read once it is not
            self.transport.pause_reading()
        wait.add_done_callback(self._read_again)

    def _take_body(self) -> bytes:
        """What has arrived of the body and was not handed on yet, as one piece."""
        data = self._body.popleft() if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        return data

    def _read_again(self, _: object) -> None:
        if self._paused and not self.closed and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    # -- the request's side
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _broken(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    async def _wait(self, seconds: float | None) -> None:
        """Until the provider sends something, at most `seconds` of silence (the read timeout).

        One timer per connection, re-armed only when it fires early: a stream waits once per
        network read, and a timer set and cancelled each time cost ~1% of the proxy's CPU."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._quiet_since = loop.time()
        self._read_timeout = seconds
        if seconds is not None and self._read_timer is None:
            self._read_timer = loop.call_at(self._quiet_since + seconds, self._check_silence)
        try:
            await waiter
        finally:
            self._waiter = None

    def _stop_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _check_silence(self) -> None:
        self._read_timer = None
        waiter, seconds = self._waiter, self._read_timeout
        if waiter is None or waiter.done() or seconds is None:
            return  # nobody waiting: the next wait arms the timer again
        deadline = self._quiet_since + seconds
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            waiter.set_exception(httpx.ReadTimeout("The provider stopped sending."))
        else:
            self._read_timer = loop.call_at(deadline, self._check_silence)

    async def send(self, head: bytes, body: list[bytes], timeouts: dict[str, Any]) -> None:
        """Write the request, then wait for the status line and headers of the answer."""
        assert self.transport is not None
        self._reset()
        self.transport.write(head + body[0] if body else head)
        for part in body[1:]:
            self.transport.write(part)
        if self._writable is not None:
            waiter = self._writable
            deadline = _Deadline(waiter, timeouts.get("write"), httpx.WriteTimeout("write"))
            try:
                await waiter
            finally:
                deadline.cancel()
        while not self.status:
            if self.error is not None:
                raise self.error
            await self._wait(timeouts.get("read"))

    async def body(self, read_timeout: float | None) -> AsyncIterator[bytes]:
        """What arrived since the last step, joined: one piece per network read or burst."""
        while True:
            if self._body:
                data = self._take_body()
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield data
            elif self.complete:
                return
            elif self.error is not None:
                raise self.error
            else:
                await self._wait(read_timeout)

    async def push(self, consumer: Consumer, read_timeout: float | None) -> None:
        """Hand what each network read brings of the body to `consumer`, from the read
        callback itself, until the body ends or the consumer raises `StopPushing`.

        Pulling (`body`) wakes the reading task once per network read; at a provider's pace
        every chunk is its own read. Pushed, the proxy's CPU per chunk at 5 ms a chunk fell from
        21.9 to 19.2 µs (bench/cost.py, docs/ARCHITECTURE.md).
        The consumer returns a future when it cannot take more yet: reading pauses until it is
        done. Its exception ends the push and is raised here.
        """
        self._read_again(None)  # paused for the pull's reader: the consumer takes over
        self._consumer = consumer
        if self._body:  # what arrived before the push began
            self._deliver(consumer)
        try:
            while self.error is None:  # a failure of the consumer's first, then the end
                if self.complete or self._stopped:
                    return
                await self._wait(read_timeout)
            raise self.error
        finally:
            self._consumer = None

    def reusable(self) -> bool:
        """Only a connection whose answer ended cleanly and whose reading runs carries another."""
        return (
            self.complete
            and self.keep_alive
            and self.error is None
            and not self.closed
            and not self._paused
        )

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()
