"""Coroutines that nearly always finish without waiting, run without a task or a timer for
that usual case: an ASGI `send` returns at once unless the client's socket is full, a `receive`
unless the body has not all arrived. What waits after all is finished as a task would."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Waiting:
    """What `step` returns when the coroutine waits: pass it to `resume`."""

    __slots__ = ("awaited",)

    def __init__(self, awaited: Any) -> None:
        self.awaited = awaited  # a future to wait for, or None for one turn of the loop


def step(coroutine: Coroutine[Any, Any, T]) -> T | Waiting:
    """Run `coroutine` up to its first wait: its result if it finished, else `Waiting`."""
    try:
        awaited = coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    return Waiting(awaited)


async def resume(coroutine: Coroutine[Any, Any, T], waiting: Waiting) -> T:
    """Run a coroutine that `step` left waiting to its end, as a task does with what its
    coroutine yields (a future to wait for, or None for a turn)."""
    awaited = waiting.awaited
    while True:
        try:
            if awaited is None:
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False  # taken over, as a task does
                await awaited
        except BaseException as exc:
            try:
                awaited = coroutine.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            continue
        try:
            awaited = coroutine.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
