"""A large body's work kept off the event loop: validated, translated and measured on one worker
thread, a piece at a time, so that one request never stalls the others' streams for long.

What validating and translating a body costs grows with its structure, not its bytes
(`json_structure.py` counts it as the body arrives): 30,000 values of one-character messages
held the loop 140 ms in one pydantic call. A body over `LARGE_VALUES` (Claude Code's first request
has ~400; long sessions a few thousand) is validated `PIECE` messages or blocks per call on the
worker thread: each call holds the GIL a few milliseconds, and the loop takes it back between
them (and every `sys.getswitchinterval()` within the translation's Python code). One thread, so
that large bodies wait for each other rather than for the loop.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from kimi_proxy.errors import InvalidRequestError
from kimi_proxy.protocol.anthropic import (
    BLOCKS,
    MESSAGES,
    ContentBlock,
    Message,
    describe_validation_error,
)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

LARGE_VALUES = 5_000
PIECE = 1_000

_PLACEHOLDER = {"role": "user", "content": ""}


def models(data: dict[str, Any]) -> int:
    """About how many models a body validates into: its messages, their blocks and tool
    results' parts, its system blocks and tools. Tells whether a body that was too small to be
    counted as it came is large all the same (dense: `[{},{},…]`)."""
    count = 0
    for key in ("messages", "system", "tools"):
        items = data.get(key)
        if isinstance(items, list):
            count += len(items)
            for item in items:
                content = item.get("content") if isinstance(item, dict) else None
                if isinstance(content, list):
                    count += len(content)
                    for block in content:
                        parts = block.get("content") if isinstance(block, dict) else None
                        count += len(parts) if isinstance(parts, list) else 0
    return count


def validate_in_pieces(model: type[M], data: dict[str, Any]) -> M:
    """`model.model_validate(data)` for a request with `messages`, `PIECE` messages (or one
    message's blocks) at a time; a problem is reported where it is in the whole body."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return _validated(model, data)
    request = _validated(model, {**data, "messages": [_PLACEHOLDER]})
    validated: list[Message] = []
    start = 0
    while start < len(messages):
        if _long(messages[start]):
            validated.append(_long_message(messages[start], start))
            start += 1
            continue
        end = start + 1
        while end < len(messages) and end - start < PIECE and not _long(messages[end]):
            end += 1
        validated += _piece(MESSAGES, messages[start:end], ("messages",), start)
        start = end
    return request.model_copy(update={"messages": validated})


def _long(raw: Any) -> bool:
    content = raw.get("content") if isinstance(raw, dict) else None
    return isinstance(content, list) and len(content) > PIECE


def _long_message(raw: dict[str, Any], index: int) -> Message:
    """One message of more than `PIECE` blocks, its blocks validated a piece at a time."""
    content = raw["content"]
    message = _piece(MESSAGES, [{**raw, "content": []}], ("messages",), index)[0]
    blocks: list[ContentBlock] = []
    for start in range(0, len(content), PIECE):
        piece = content[start : start + PIECE]
        blocks += _piece(BLOCKS, piece, ("messages", index, "content"), start)
    message.content = blocks
    return message


def _validated(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None


def _piece(
    adapter: TypeAdapter[list[T]], items: list[Any], at: tuple[str | int, ...], offset: int
) -> list[T]:
    """Items `offset`… of the list at `at`, validated."""
    try:
        return adapter.validate_python(items)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc, at, offset)) from None
