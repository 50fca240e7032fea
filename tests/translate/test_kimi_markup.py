"""Kimi K2's tool-call markup left in the text by a provider: recovered as real tool calls.

Some providers (a vLLM or SGLang without the `kimi_k2` parser, some OpenRouter hosts) pass the
model's special tokens on as text. Without recovery Claude Code shows the markup and never runs
the call; with it, the call is a `tool_use` block like any other, however the text is split.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.streams import (
    check_grammar,
    comparable_blocks,
    finish,
    reasoning,
    run,
    sdk_accumulate,
    text,
    tool,
    upstream_for,
)

from kimi_proxy.translate.kimi_markup import MarkupCall, MarkupScanner, split_markup
from kimi_proxy.translate.response import openai_to_anthropic_message

TOOLS = {
    "tools": [
        {"name": "Bash", "input_schema": {"type": "object"}},
        {"name": "Write", "input_schema": {"type": "object"}},
    ]
}
LEAKED = (
    "I'll check first."
    "<|tool_calls_section_begin|>"
    '<|tool_call_begin|>functions.Bash:0<|tool_call_argument_begin|>{"command": "ls -la"}'
    "<|tool_call_end|>"
    "<|tool_call_begin|> functions.Write:1 <|tool_call_argument_begin|>"
    '{"file_path": "/tmp/a.txt", "content": "x < y <| z"}<|tool_call_end|>'
    "<|tool_calls_section_end|>"
)
CALLS = [
    MarkupCall("functions.Bash:0", "Bash", '{"command": "ls -la"}'),
    MarkupCall(
        "functions.Write:1", "Write", '{"file_path": "/tmp/a.txt", "content": "x < y <| z"}'
    ),
]
EXPECTED_BLOCKS = [
    {"type": "text", "text": "I'll check first."},
    {"type": "tool_use", "name": "Bash", "input": {"command": "ls -la"}},
    {
        "type": "tool_use",
        "name": "Write",
        "input": {"file_path": "/tmp/a.txt", "content": "x < y <| z"},
    },
]


def scan(pieces: list[str]) -> list[str | MarkupCall]:
    """Feed `pieces` one by one; adjacent text merged."""
    scanner = MarkupScanner()
    out: list[str | MarkupCall] = []
    for piece in [*(p for part in pieces for p in scanner.feed(part)), *scanner.finish()]:
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] += piece
        elif piece != "":
            out.append(piece)
    return out


def split_at(value: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(value), *(c % (len(value) + 1) for c in cuts)})
    return [value[a:b] for a, b in itertools.pairwise(points)]


def test_leaked_markup_becomes_text_and_calls() -> None:
    assert split_markup(LEAKED) == ("I'll check first.", CALLS)


@given(st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_of_the_stream_gives_the_same_calls(cuts: list[int]) -> None:
    assert scan(split_at(LEAKED, cuts)) == ["I'll check first.", *CALLS]


@given(st.text(alphabet="<|>ab _toolcalsegin", max_size=60), st.lists(st.integers(0), max_size=8))
def test_text_without_markup_passes_unchanged(value: str, cuts: list[int]) -> None:
    """Text that merely looks like markup (`<`, `<|`, a marker's start) is never lost."""
    if any(m in value for m in ("<|tool_calls_section_begin|>", "<|tool_call_begin|>")):
        return
    assert "".join(p for p in scan(split_at(value, cuts)) if isinstance(p, str)) == value


def test_a_possible_marker_start_is_held_only_until_it_cannot_be_one() -> None:
    scanner = MarkupScanner()
    assert scanner.feed("a <|tool") == ["a "]
    assert scanner.feed("box") == ["<|toolbox"]
    assert scanner.feed("end <|too") == ["end "]
    assert scanner.finish() == ["<|too"]


def test_arguments_a_parser_encoded_twice_are_unwrapped() -> None:
    doubled = json.dumps(json.dumps({"todos": [{"id": "a"}]}))
    leaked = f"<|tool_call_begin|>functions.TodoWrite:3<|tool_call_argument_begin|>{doubled}"
    _, calls = split_markup(leaked + "<|tool_call_end|>")
    assert calls == [MarkupCall("functions.TodoWrite:3", "TodoWrite", '{"todos": [{"id": "a"}]}')]


def test_a_bare_call_without_section_markers_and_text_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    leaked = "<|tool_call_begin|>Bash<|tool_call_argument_begin|>{}<|tool_call_end|>"
    assert split_markup(leaked + " done") == (
        " done",
        [MarkupCall("functions.Bash:0", "Bash", "{}")],
    )
    assert split_markup(leaked) == ("", [MarkupCall("functions.Bash:0", "Bash", "{}")])
    assert "dropped" not in caplog.text  # a whole call: only the section's end was missing


def test_markup_cut_off_before_its_end_is_dropped_not_shown() -> None:
    leaked = (
        "Hi<|tool_calls_section_begin|><|tool_call_begin|>functions.Bash:0"
        '<|tool_call_argument_begin|>{"co'
    )
    assert split_markup(leaked) == ("Hi", [])


def test_streamed_markup_is_translated_into_tool_use_blocks() -> None:
    """Split in pieces that cut every marker, the provider saying `stop` as these do: a text
    block, then two tool_use blocks, and `stop_reason: tool_use` so Claude Code runs them."""
    chunks = [text(LEAKED[i : i + 7]) for i in range(0, len(LEAKED), 7)]
    events = run(upstream_for(TOOLS), [*chunks, finish("stop")])
    check_grammar(events)
    message = sdk_accumulate(events)
    assert comparable_blocks(message.content) == EXPECTED_BLOCKS
    assert message.stop_reason == "tool_use"
    assert all("<|" not in e["delta"].get("text", "") for e in events if "delta" in e)


def test_markup_calls_use_the_clients_names_for_shortened_tool_names() -> None:
    long_name = "mcp__server__" + "x" * 80
    upstream = upstream_for({"tools": [{"name": long_name, "input_schema": {}}]})
    alias = upstream.payload["tools"][0]["function"]["name"]
    leaked = (
        f"<|tool_call_begin|>functions.{alias}:0<|tool_call_argument_begin|>{{}}<|tool_call_end|>"
    )
    message = sdk_accumulate(run(upstream, [text(leaked), finish("stop")]))
    assert [b.name for b in message.content] == [long_name]


def test_non_streaming_markup_is_translated_too() -> None:
    completion: dict[str, Any] = {
        "choices": [{"message": {"role": "assistant", "content": LEAKED}, "finish_reason": "stop"}],
    }
    message = openai_to_anthropic_message(completion, upstream_for({**TOOLS, "stream": False}))
    assert comparable_blocks(message["content"]) == EXPECTED_BLOCKS
    assert message["stop_reason"] == "tool_use"


def test_a_held_tail_goes_out_before_whatever_comes_next() -> None:
    """A "<" held as a possible marker start is text after all when a call or reasoning comes
    next: it keeps its place before them (hypothesis found the order swapped)."""
    events = run(
        upstream_for(TOOLS),
        [text("a <"), tool(0, id="c", name="Bash", args="{}"), finish("tool_calls")],
    )
    assert [b["type"] for b in comparable_blocks(sdk_accumulate(events).content)] == [
        "text",
        "tool_use",
    ]
    events = run(upstream_for(), [reasoning("x <"), text("y"), finish("stop")])
    blocks = comparable_blocks(sdk_accumulate(events).content)
    assert [b.get("thinking", b.get("text")) for b in blocks] == ["x <", "y"]


def test_markup_in_a_thinking_models_reasoning_becomes_a_call() -> None:
    """A thinking model's call can end up in the reasoning (a server that missed the end of
    its thinking): recovered the same way, the thinking kept without it."""
    leaked = LEAKED.replace("I'll check first.", "Let me look.")
    chunks = [reasoning(leaked[i : i + 5], "reasoning_content") for i in range(0, len(leaked), 5)]
    message = sdk_accumulate(run(upstream_for(TOOLS), [*chunks, finish("stop")]))
    assert comparable_blocks(message.content) == [
        {"type": "thinking", "thinking": "Let me look.", "signature": ""},
        *EXPECTED_BLOCKS[1:],
    ]
    assert message.stop_reason == "tool_use"
    completion: dict[str, Any] = {
        "choices": [
            {
                "message": {"role": "assistant", "content": "", "reasoning_content": leaked},
                "finish_reason": "stop",
            }
        ],
    }
    plain = openai_to_anthropic_message(completion, upstream_for({**TOOLS, "stream": False}))
    assert comparable_blocks(plain["content"]) == comparable_blocks(message.content)
