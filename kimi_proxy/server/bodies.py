"""JSON in and out of a route: the request body read within its size and time limits and
validated, and a JSON response."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from kimi_proxy.errors import InvalidRequestError, RequestTooLargeError
from kimi_proxy.protocol.anthropic import describe_validation_error

M = TypeVar("M", bound=BaseModel)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_json_body(request: Request, limit: int, timeout: float) -> tuple[Any, bytes]:
    """The request body as JSON, and as it came: at most `limit` bytes (refused before reading
    them all), arriving within `timeout` seconds (a slow sender cannot hold a worker)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"Request body is {declared} bytes; the limit is {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
                chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidRequestError("The client disconnected while sending the body.") from None
    except TimeoutError:
        raise InvalidRequestError(f"The request body took over {timeout:g} s to arrive.") from None
    body = b"".join(chunks)
    if not body:
        raise InvalidRequestError("Request body is empty; send a JSON object.")
    try:
        return orjson.loads(body), body
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None


async def parse_body(request: Request, model: type[M]) -> M:
    return (await parse_body_and_bytes(request, model))[0]


async def parse_body_and_bytes(request: Request, model: type[M]) -> tuple[M, bytes]:
    """The validated body, and the bytes it came as (a failover translates them again)."""
    settings = request.app.state.proxy.settings
    data, raw = await read_json_body(request, settings.max_body_bytes, settings.body_timeout)
    if not isinstance(data, dict):
        raise InvalidRequestError("Request body must be a JSON object.")
    try:
        return model.model_validate(data), raw
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None
