"""Awaitables that nearly always finish without waiting, run without a task or a timer for
that usual case: an ASGI `send` returns at once unless the client's socket is full, a `receive`
unless the body has not all arrived. What waits after all is finished as a task would."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Rest(Generic[T]):
    """What `step` returns when the awaitable has to wait: await `rest` for its result."""

    __slots__ = ("rest",)

    def __init__(self, rest: Awaitable[T]) -> None:
        self.rest = rest


def step(awaitable: Awaitable[T]) -> T | Rest[T]:
    """Run `awaitable` up to its first wait: its result if it finished, else `Rest`. Only a
    coroutine can be run by hand; anything else is all `Rest`."""
    if not inspect.iscoroutine(awaitable):  # (not the Coroutine ABC: its check costs a µs)
        return Rest(awaitable)
    try:
        awaited = awaitable.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    return Rest(_resume(awaitable, awaited))


async def _resume(coroutine: Coroutine[Any, Any, T], awaited: Any) -> T:
    """Run a coroutine that `step` left waiting on `awaited` to its end, as a task does with
    what its coroutine yields (a future to wait for, or None for a turn)."""
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
