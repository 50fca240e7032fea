"""A large body validated a piece at a time is the same request as validated whole, and a
problem in it is reported where it is."""

from __future__ import annotations

from typing import Any

import pytest

from kimi_proxy.errors import InvalidRequestError
from kimi_proxy.protocol.anthropic import MessagesRequest
from kimi_proxy.server.large_bodies import PIECE, validate_in_pieces


def large_request() -> dict[str, Any]:
    blocks = [{"type": "text", "text": f"b{i}"} for i in range(PIECE * 2 + 7)]
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"m{i}"} for i in range(PIECE)]
    messages += [{"role": "assistant", "content": blocks}, {"role": "user", "content": "last"}]
    for _ in range(PIECE):
        messages += [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]
    return {"model": "m", "max_tokens": 10, "messages": messages, "tools": [], "metadata": {}}


def test_pieces_make_the_same_request_as_one_validation() -> None:
    data = large_request()
    whole = MessagesRequest.model_validate(data)
    assert validate_in_pieces(MessagesRequest, data).model_dump() == whole.model_dump()


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ((PIECE * 2 + 40, "role"), "messages.2040.role: "),
        ((PIECE, "content", PIECE + 3, "type"), f"messages.{PIECE}.content.{PIECE + 3}.text: "),
        ((PIECE, "role"), f"messages.{PIECE}.role: "),
    ],
)
def test_a_problem_is_reported_where_it_is_in_the_whole_body(
    path: tuple[Any, ...], where: str
) -> None:
    data = large_request()
    target: Any = data["messages"]
    for step in path[:-1]:
        target = target[step]
    if path[-1] == "type":
        del target["text"]  # a text block without its text
    else:
        target[path[-1]] = "robot"
    with pytest.raises(InvalidRequestError) as refused:
        validate_in_pieces(MessagesRequest, data)
    assert str(refused.value.message).startswith(where)
