"""JSON in and out of a route: the request body read within its size and time limits and
validated, and a JSON response.

Bodies being read and parsed are bounded before a byte is read: all of them together by
`KIMI_MAX_BODIES_BYTES` (a parsed body takes several times its size: forty 31 MB uploads at
once took a process to 1.3 GB), and a gateway user's by the user's concurrent requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive

from kimi_proxy.errors import (
    InvalidRequestError,
    OverloadedError,
    RateLimitError,
    RequestTooLargeError,
)
from kimi_proxy.protocol.anthropic import describe_validation_error

from .at_once import Rest, step
from .json_structure import StructureCounter
from .large_bodies import LARGE_VALUES, models, validate_in_pieces

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class BodiesInFlight:
    """The request bodies this process is reading and parsing: their bytes, and each user's."""

    max_bytes: int
    bytes: int = 0
    by_user: Counter[str] = field(default_factory=Counter)

    @contextlib.contextmanager
    def reading(self, user: str | None, user_limit: int) -> Iterator[Callable[[int], None]]:
        """While a body is read and parsed; `grow(n)` counts n more of its bytes, or raises."""
        if user is not None:
            if self.by_user[user] >= user_limit:
                raise RateLimitError(
                    f"User {user!r} is already sending {user_limit} requests at once, the "
                    "user's limit of concurrent requests; retry when one has been read.",
                    retry_after=1,
                )
            self.by_user[user] += 1
        held = 0

        def grow(n: int) -> None:
            nonlocal held
            others = self.bytes - held  # one body alone is always read (its own limit holds)
            if others and self.bytes + n > self.max_bytes:
                raise OverloadedError(
                    f"This kimi-proxy is reading {self.bytes // 2**20} MB of other requests "
                    "right now (KIMI_MAX_BODIES_BYTES); retry in a moment.",
                    retry_after=1,
                )
            self.bytes += n
            held += n

        try:
            yield grow
        finally:
            self.bytes -= held
            if user is not None:
                self.by_user[user] -= 1
                if not self.by_user[user]:
                    del self.by_user[user]


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_json_body(
    request: Request,
    limit: int,
    timeout: float,
    grow: Callable[[int], None],
    max_values: int,
) -> tuple[Any, bytes, int | None]:
    """The request body as JSON, and as it came: at most `limit` bytes (refused before reading
    them all) and `max_values` of structure (`json_structure.py`: refused as it arrives, before
    parsing it could stall the event loop), arriving within `timeout` seconds (a slow sender
    cannot hold a worker); `grow` is told of its bytes before they are read (the declared
    length) or as they come. Also returns its structure's count: None for a body too small to
    pass `max_values` (at most 2 of every 3 bytes can be structure: `[[],[],…]`), not counted."""
    declared = request.headers.get("content-length")
    counted = 0
    if declared and declared.isdigit():
        if int(declared) > limit:
            raise RequestTooLargeError(
                f"Request body is {declared} bytes; the limit is {limit} bytes."
            )
        counted = int(declared)
        grow(counted)
    chunks: list[bytes] = []
    size = 0
    structure: StructureCounter | None = None
    deadline = asyncio.get_running_loop().time() + timeout
    more = True
    while more:
        message = await _receive_by(request.receive, deadline, timeout)
        chunk, more = message.get("body", b""), message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
        if size > counted:
            grow(size - counted)
            counted = size
        chunks.append(chunk)
        if structure is None and size * 2 > max_values * 3:
            structure = StructureCounter(rough_until=min(LARGE_VALUES, max_values))
            pieces = chunks
        elif structure is not None:
            pieces = [chunk]
        else:
            continue
        if any(structure.feed(piece) > max_values for piece in pieces):
            raise RequestTooLargeError(
                f"Request body has over {max_values:,} JSON values (messages, content "
                "blocks, fields); this kimi-proxy reads at most that many in one "
                "request (KIMI_MAX_BODY_VALUES). Start a new conversation or /compact "
                "this one."
            )
    body = b"".join(chunks)
    if not body:
        raise InvalidRequestError("Request body is empty; send a JSON object.")
    try:
        return orjson.loads(body), body, None if structure is None else structure.count
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None


async def _receive_by(receive: Receive, deadline: float, timeout: float) -> Message:
    """The body's next piece. A timer only when it has not arrived yet: a body that came
    whole (nearly all of them) is read without one (`at_once.py`)."""
    received = step(receive())
    if not isinstance(received, Rest):
        return _body_piece(received)
    try:
        async with asyncio.timeout_at(deadline):
            return _body_piece(await received.rest)
    except TimeoutError:
        raise InvalidRequestError(f"The request body took over {timeout:g} s to arrive.") from None


def _body_piece(message: Message) -> Message:
    if message["type"] == "http.disconnect":
        raise InvalidRequestError("The client disconnected while sending the body.")
    return message


class Parsed(NamedTuple, Generic[M]):
    """A validated body, the bytes it came as (a failover translates them again), and whether
    it is large enough that its work leaves the event loop (`large_bodies.py`)."""

    request: M
    raw: bytes
    large: bool


async def parse_body(request: Request, model: type[M]) -> M:
    return (await parse_body_and_bytes(request, model)).request


async def parse_body_and_bytes(request: Request, model: type[M]) -> Parsed[M]:
    state = request.app.state.proxy
    settings = state.settings
    user = request.scope.get("state", {}).get("user")
    user_limit = state.gateway.limiter.concurrency(user) if user is not None else 0
    with state.bodies.reading(user.name if user else None, user_limit) as grow:
        data, raw, values = await read_json_body(
            request,
            settings.max_body_bytes,
            settings.body_timeout,
            grow,
            settings.max_body_values,
        )
        if not isinstance(data, dict):
            raise InvalidRequestError("Request body must be a JSON object.")
        if (models(data) if values is None else values) > LARGE_VALUES:
            return Parsed(await state.off_loop(validate_in_pieces, model, data), raw, True)
        try:
            return Parsed(model.model_validate(data), raw, False)
        except ValidationError as exc:
            raise InvalidRequestError(describe_validation_error(exc)) from None
        finally:
            state.free_later(data)  # the JSON's objects: freed while the provider thinks
