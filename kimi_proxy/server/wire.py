"""Bounds on a request's head, enforced on the wire before any work: uvicorn's httptools
protocol with three limits it lacks.

* A head (request line and headers) over `MAX_HEAD_BYTES`, or with more than `MAX_HEADER_LINES`
  lines, is answered `431` and the connection closed — checked on the raw bytes before the
  parser sees them, so a 100 MB header costs one read, not seconds of CPU and memory.
* A head must arrive within `HEAD_TIMEOUT` seconds of the connection opening (or of the last
  response ending): a client that sends half a head and waits (slowloris), or opens sockets and
  sends nothing, is disconnected instead of holding them forever.

A response's head (status line and headers) is held back until the first piece of its body,
and goes out in the same write (`HeadWithBody`): one packet and one wake-up of the client
instead of two. A stream's head, `message_start` and first delta leave together (relay.py).

Everything else is uvicorn's (`uvicorn.protocols.http.httptools_impl`).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # Claude Code's heads are about 1 KB; nginx's default is 8 KB a line
MAX_HEADER_LINES = 128
HEAD_TIMEOUT = 10.0
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 31\r\nconnection: close\r\n\r\n"
    b"Request header fields too large"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, the request head bounded in size, lines and time."""

    _head_done = False
    _head_bytes = 0
    _head_lines = 0
    _tail = b""
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = HeadWithBody(transport, self.loop)  # type: ignore[assignment]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._head_done and not self._head_within_bounds(data):
            self._stop_head_timer()
            self.transport.write(HEAD_TOO_LARGE)
            self.transport.close()
            return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._stop_head_timer()
        pipelined = self.cycle is not None and not self.cycle.response_complete
        super().on_headers_complete()
        if not pipelined and not self.parser.should_upgrade():  # its response is written next
            cast(HeadWithBody, self.transport).hold_next()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_done, self._head_bytes, self._head_lines, self._tail = False, 0, 0, b""

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    def _head_within_bounds(self, data: bytes) -> bool:
        """Count this read's share of the head (up to its blank line, when it has it)."""
        window = self._tail + data
        end = window.find(b"\r\n\r\n")
        head = window[len(self._tail) : end + 4] if end >= 0 else data
        self._head_bytes += len(head)
        self._head_lines += head.count(b"\n")
        self._tail = window[-3:]
        return self._head_bytes <= MAX_HEAD_BYTES and self._head_lines <= MAX_HEADER_LINES

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._head_done and not self.transport.is_closing():
            self.transport.close()


class HeadWithBody:
    """The connection's transport, holding a response's first write (uvicorn writes the head
    on `http.response.start`) until the next one (the body's first piece), to send both at once.

    Nothing is held past the loop step that wrote it: a head whose body does not follow at
    once (or a `100 Continue`) goes out in the next loop iteration on its own. With
    `BodyWriter.hold`, a stream's first delta goes out in one write instead of three:
    0.03–0.04 ms less time to it (bench/first_token.py, interleaved against the change's parent).
    """

    __slots__ = ("_held", "_hold_next", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._hold_next = False

    def hold_next(self) -> None:
        """Hold the next write (a new response's head) for the one after it."""
        self._hold_next = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._hold_next:
            self._hold_next = False
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # the rest of `asyncio.Transport`, unchanged
        return getattr(self._transport, name)
