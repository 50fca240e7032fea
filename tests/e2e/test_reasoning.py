"""Reasoning models through the real Claude Code CLI: thinking blocks arrive, and come back."""

from __future__ import annotations

from typing import Any

import pytest
from support.claude import RunClaude
from support.proxy import proxy_for
from support.upstream import Reply, text_stream

pytestmark = pytest.mark.e2e


def test_thinking_is_shown_and_the_next_turn_still_works(claude: RunClaude) -> None:
    def script(body: dict[str, Any], n: int) -> Reply:
        if n == 0:
            return text_stream("Forty-two.", reasoning="The user wants the answer. It is 42.")
        return text_stream("Still forty-two.")

    with proxy_for(script, provider="moonshot") as proxy:
        first = claude(proxy.url, "What is the answer?")
        second = claude(proxy.url, "Are you sure?", "--continue")
        sent = proxy.upstream.bodies[-1]["messages"]
    first.assert_success("Forty-two.")
    thinking = [b for b in first.assistant_blocks if b["type"] == "thinking"]
    assert [b["thinking"] for b in thinking] == ["The user wants the answer. It is 42."]
    second.assert_success("Still forty-two.")
    replayed = [m for m in sent if m["role"] == "assistant"]
    assert replayed[-1]["content"] == "Forty-two."
    # Moonshot's thinking models want their reasoning back on later turns, as reasoning_content.
    assert replayed[-1].get("reasoning_content") == "The user wants the answer. It is 42."
