"""The SSE response's own task handling, driven as ASGI directly: who may stop a stream, and
that the provider's side is closed whoever did."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kimi_proxy.streaming import EventStreamResponse


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
