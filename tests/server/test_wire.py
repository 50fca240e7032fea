"""The client connection's transport: a response's head goes out with its body's first piece."""

from __future__ import annotations

import asyncio
from typing import Any

from kimi_proxy.server.wire import HeadWithBody


class Transport:
    """The writes a connection made, as the socket got them."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


def held() -> tuple[HeadWithBody, Transport]:
    transport = Transport()
    wire = HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    return wire, transport


async def test_a_head_goes_out_with_the_first_piece_of_its_body_in_one_write() -> None:
    wire, transport = held()
    wire.hold_next()
    wire.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.writes == []
    wire.write(b"body")
    wire.write(b"more")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]
    await asyncio.sleep(0)
    assert len(transport.writes) == 2  # nothing left to flush


async def test_a_head_without_a_body_in_the_same_step_goes_out_at_its_end() -> None:
    wire, transport = held()
    wire.hold_next()
    wire.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for it to send a body
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    wire.write(b"next")  # only the write after `hold_next` is held
    assert transport.writes[-1] == b"next"


async def test_closing_sends_a_held_head_first_and_the_rest_is_the_transports() -> None:
    wire, transport = held()
    wire.hold_next()
    wire.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
    wire.close()
    assert transport.writes == [b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"]
    assert wire.is_closing() and transport.closed
    assert wire.get_extra_info("peername") == ("127.0.0.1", 1)
    await asyncio.sleep(0)  # the step's end finds nothing to send on a closed connection
    assert len(transport.writes) == 1
