"""The SSE response's own task handling, driven as ASGI directly: who may stop a stream, and
that the provider's side is closed whoever did."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kimi_proxy.server.streaming import BodyWriter, EventStreamResponse


async def endless() -> AsyncIterator[bytes]:
    while True:
        yield b"data: x\n\n"
        await asyncio.sleep(0.01)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = 0

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def on_close(self) -> None:
        await asyncio.sleep(0)  # a real close awaits (the provider's connection)
        self.closed += 1


def response(recorder: Recorder) -> EventStreamResponse:
    return EventStreamResponse(endless(), ping_interval=10.0, on_close=recorder.on_close)


async def test_a_client_that_leaves_ends_the_stream_quietly_and_closes_the_provider() -> None:
    recorder = Recorder()
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    task = asyncio.create_task(response(recorder)({"type": "http"}, receive, recorder.send))
    await asyncio.sleep(0.05)
    left.set()
    await asyncio.wait_for(task, 1)  # returns normally: the client's leaving is no error
    assert recorder.closed == 1
    assert not task.cancelled() and task.cancelling() == 0
    assert len(recorder.sent) > 2


async def test_a_server_cancelling_the_stream_is_obeyed_and_still_closes_the_provider() -> None:
    recorder = Recorder()

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client stays
        return {"type": "http.disconnect"}

    task = asyncio.create_task(response(recorder)({"type": "http"}, receive, recorder.send))
    await asyncio.sleep(0.05)
    task.cancel()  # e.g. the server's shutdown grace period is over
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.closed == 1


async def test_a_finished_stream_ignores_the_disconnect_that_follows() -> None:
    recorder = Recorder()

    async def short() -> AsyncIterator[bytes]:
        yield b"data: only\n\n"

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}  # uvicorn says so once the response is complete

    stream = EventStreamResponse(short(), ping_interval=10.0, on_close=recorder.on_close)
    await stream({"type": "http"}, receive, recorder.send)
    await asyncio.sleep(0.01)  # the listener's callback has run by now
    assert recorder.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert recorder.closed == 1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


class SlowClient:
    """A server `send` as uvicorn's behaves: at once while the client keeps up, else waiting
    for its socket to drain (`ready`)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.ready = asyncio.Event()
        self.ready.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ready.wait()
        self.bodies.append(message["body"])


async def test_the_writer_sends_at_once_while_the_client_keeps_up() -> None:
    client = SlowClient()
    writer = BodyWriter()
    writer.bind(client.send)
    assert writer.write(b"one") is None
    assert writer.write(b"two") is None
    assert client.bodies == [b"one", b"two"]  # no task step in between


async def test_the_writer_holds_the_reader_back_and_keeps_order_while_the_client_is_behind() -> (
    None
):
    client = SlowClient()
    writer = BodyWriter()
    writer.bind(client.send)
    client.ready.clear()
    wait = writer.write(b"one")
    assert wait is not None and not wait.done()
    assert writer.write(b"two") is wait  # queued behind the first
    assert writer.write(b"three") is wait
    await asyncio.sleep(0.01)
    assert client.bodies == [] and not wait.done()
    client.ready.set()
    await asyncio.wait_for(writer.drained(), 1)
    assert wait.done()
    assert b"".join(client.bodies) == b"onetwothree"
    assert client.bodies[0] == b"one"
    assert writer.write(b"four") is None  # caught up: at once again
    assert client.bodies[-1] == b"four"


async def test_a_client_connection_that_fails_while_behind_fails_the_next_write() -> None:
    ready = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        await ready.wait()
        raise OSError("the client's connection broke")

    writer = BodyWriter()
    writer.bind(send)
    wait = writer.write(b"one")
    assert wait is not None
    ready.set()
    await asyncio.wait_for(writer.drained(), 1)
    with pytest.raises(OSError, match="broke"):
        writer.write(b"two")


async def test_what_the_writer_holds_goes_with_the_next_piece_or_alone_at_the_steps_end() -> None:
    client = SlowClient()
    writer = BodyWriter()
    writer.bind(client.send)
    writer.hold(b"start ")
    assert client.bodies == []
    assert writer.write(b"delta") is None
    assert client.bodies == [b"start delta"]  # one piece, one write
    writer.hold(b"alone")
    await asyncio.sleep(0)  # nothing came with it in this step: it goes out on its own
    await asyncio.sleep(0)
    assert client.bodies == [b"start delta", b"alone"]
    writer.hold(b"before ")
    assert writer.with_held(b"an error") == b"before an error"  # a yielded piece takes it too
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert client.bodies == [b"start delta", b"alone"]  # and it is not sent twice
