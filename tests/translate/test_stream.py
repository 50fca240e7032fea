"""Streaming translation: OpenAI chunks in, Anthropic events out (golden-style sequences)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from support.streams import (
    check_grammar,
    chunk,
    finish,
    reasoning,
    run,
    sdk_accumulate,
    text,
    tool,
    upstream_for,
    usage,
)

from kimi_proxy.errors import ApiError, InvalidRequestError, ProxyError, RateLimitError
from kimi_proxy.protocol.sse import SSEDecoder
from kimi_proxy.translate.accumulate import accumulate_message
from kimi_proxy.translate.response import INVALID_ARGUMENTS_KEY
from kimi_proxy.translate.stream import StreamTranslator

ANTHROPIC_TOOL_ID = re.compile(r"^toolu_[a-zA-Z0-9_-]+$")
GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden"
TOOLS = {
    "tools": [
        {"name": "Bash", "input_schema": {"type": "object"}},
        {"name": "Read", "input_schema": {"type": "object"}},
    ]
}


def normalized(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with the random message and tool ids replaced by stable placeholders."""
    out = json.loads(json.dumps(events))
    for event in out:
        if event["type"] == "message_start":
            assert event["message"]["id"].startswith("msg_")
            event["message"]["id"] = "msg_ID"
        block = event.get("content_block")
        if block and block["type"] == "tool_use":
            assert ANTHROPIC_TOOL_ID.match(block["id"]), block["id"]
            block["id"] = "toolu_ID"
    return out


def start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, kind: str, **fields: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(
    reason: str, output: int = 0, input: int = 0, cached: int = 0, sequence: str | None = None
) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": sequence},
        "usage": {
            "input_tokens": input,
            "output_tokens": output,
            "cache_read_input_tokens": cached,
        },
    }


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_ID",
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    },
}
MESSAGE_STOP = {"type": "message_stop"}
TEXT = {"type": "text", "text": ""}
THINKING = {"type": "thinking", "thinking": "", "signature": ""}


def tool_block(name: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_ID", "name": name, "input": {}}


def test_text_stream() -> None:
    events = run(
        upstream_for(),
        [
            chunk({"role": "assistant", "content": ""}),
            text("Hel"),
            text("lo"),
            finish("stop", usage=usage(12, 2)),
        ],
    )
    check_grammar(events)
    assert normalized(events) == [
        MESSAGE_START,
        start(0, TEXT),
        delta(0, "text_delta", text="Hel"),
        delta(0, "text_delta", text="lo"),
        stop(0),
        message_delta("end_turn", output=2, input=12),
        MESSAGE_STOP,
    ]


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_then_text(field: str) -> None:
    events = run(
        upstream_for(),
        [
            reasoning("Think", field),
            reasoning("ing.", field),
            text("Answer"),
            finish("stop"),
        ],
    )
    check_grammar(events)
    assert normalized(events) == [
        MESSAGE_START,
        start(0, THINKING),
        delta(0, "thinking_delta", thinking="Think"),
        delta(0, "thinking_delta", thinking="ing."),
        delta(0, "signature_delta", signature=""),
        stop(0),
        start(1, TEXT),
        delta(1, "text_delta", text="Answer"),
        stop(1),
        message_delta("end_turn"),
        MESSAGE_STOP,
    ]


def test_tool_call_fragments_stream_live() -> None:
    translator = StreamTranslator(upstream_for(TOOLS))
    translator.start()
    opened = translator.feed(tool(0, id="functions.Bash:0", name="Bash", args=""))
    assert [e["type"] for e in opened] == ["content_block_start"]
    assert opened[0]["content_block"]["name"] == "Bash"
    assert opened[0]["content_block"]["input"] == {}
    fragments = ['{"comm', 'and": "l', 's -la"', "}"]
    for fragment in fragments:
        assert translator.feed(tool(0, args=fragment)) == [
            delta(0, "input_json_delta", partial_json=fragment)
        ]
    closing = translator.feed(finish("tool_calls"))
    assert closing == []
    tail = translator.finish()
    assert tail == [stop(0), message_delta("tool_use"), MESSAGE_STOP]


def test_tool_call_first_fragment_carries_arguments() -> None:
    translator = StreamTranslator(upstream_for(TOOLS))
    translator.start()
    events = translator.feed(tool(0, id="c1", name="Read", args='{"path":'))
    assert normalized(events) == [
        start(0, tool_block("Read")),
        delta(0, "input_json_delta", partial_json='{"path":'),
    ]


def test_two_parallel_calls_sequential() -> None:
    events = run(
        upstream_for(TOOLS),
        [
            text("Running both."),
            tool(0, id="c0", name="Bash", args=""),
            tool(0, args='{"command":'),
            tool(0, args='"ls"}'),
            tool(1, id="c1", name="Read", args=""),
            tool(1, args='{"path": "/x"}'),
            finish("tool_calls"),
        ],
    )
    assert check_grammar(events) == ["text", "tool_use", "tool_use"]
    assert normalized(events) == [
        MESSAGE_START,
        start(0, TEXT),
        delta(0, "text_delta", text="Running both."),
        stop(0),
        start(1, tool_block("Bash")),
        delta(1, "input_json_delta", partial_json='{"command":'),
        delta(1, "input_json_delta", partial_json='"ls"}'),
        stop(1),
        start(2, tool_block("Read")),
        delta(2, "input_json_delta", partial_json='{"path": "/x"}'),
        stop(2),
        message_delta("tool_use"),
        MESSAGE_STOP,
    ]
    message = sdk_accumulate(events)
    assert [(b.name, b.input) for b in message.content[1:]] == [
        ("Bash", {"command": "ls"}),
        ("Read", {"path": "/x"}),
    ]
    assert message.content[1].id != message.content[2].id


def test_interleaved_parallel_calls_come_out_in_index_order() -> None:
    events = run(
        upstream_for(TOOLS),
        [
            tool(0, id="c0", name="Bash", args='{"comm'),
            tool(1, id="c1", name="Read", args='{"pa'),
            tool(0, args='and": "ls"'),
            tool(1, args='th": "/x"}'),
            tool(0, args="}"),
            finish("tool_calls"),
        ],
    )
    assert check_grammar(events) == ["tool_use", "tool_use"]
    message = sdk_accumulate(events)
    assert [(b.name, b.input) for b in message.content] == [
        ("Bash", {"command": "ls"}),
        ("Read", {"path": "/x"}),
    ]
    assert message.stop_reason == "tool_use"


def test_interleaved_call_opens_as_soon_as_the_first_completes() -> None:
    translator = StreamTranslator(upstream_for(TOOLS))
    translator.start()
    translator.feed(tool(0, id="c0", name="Bash", args='{"a": 1'))
    assert translator.feed(tool(1, id="c1", name="Read", args='{"b"')) == []  # held
    events = translator.feed(tool(0, args="}"))
    assert normalized(events) == [
        delta(0, "input_json_delta", partial_json="}"),
        stop(0),
        start(1, tool_block("Read")),
        delta(1, "input_json_delta", partial_json='{"b"'),
    ]
    assert translator.feed(tool(1, args=": 2}")) == [
        delta(1, "input_json_delta", partial_json=": 2}")
    ]


def test_text_after_interleaved_calls_stays_after_them() -> None:
    events = run(
        upstream_for(TOOLS),
        [
            tool(0, id="c0", name="Bash", args=""),
            tool(1, id="c1", name="Read", args="{}"),  # held: call 0 has no arguments yet
            tool(0, args="{}"),
            text("Done."),
            finish("stop"),
        ],
    )
    assert check_grammar(events) == ["tool_use", "tool_use", "text"]
    assert [b.type for b in sdk_accumulate(events).content] == ["tool_use", "tool_use", "text"]


def test_text_after_tool_call_opens_a_new_text_block() -> None:
    events = run(
        upstream_for(TOOLS),
        [
            text("Before."),
            tool(0, id="c0", name="Bash", args="{}"),
            text("After."),
            finish("stop"),
        ],
    )
    assert check_grammar(events) == ["text", "tool_use", "text"]
    message = sdk_accumulate(events)
    assert message.content[0].text == "Before."
    assert message.content[2].text == "After."
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize(
    "empty",
    [
        chunk({"tool_calls": []}),
        chunk({"content": ""}),
        chunk({"content": None}),
        chunk({"role": "assistant"}),
        chunk({}),
        chunk({"reasoning": ""}),
        chunk({"content": "", "tool_calls": [], "reasoning_content": None}),
        {"id": "x", "choices": []},
        {"id": "x", "choices": [{"index": 0}]},
    ],
)
def test_empty_chunks_emit_nothing(empty: dict[str, Any]) -> None:
    translator = StreamTranslator(upstream_for(TOOLS))
    translator.start()
    assert translator.feed(empty) == []
    translator.feed(tool(0, id="c0", name="Bash", args='{"a"'))
    assert translator.feed(empty) == []  # nor while a tool call is open
    assert translator.feed(tool(0, args=": 1}")) == [
        delta(0, "input_json_delta", partial_json=": 1}")
    ]


def test_other_choices_are_ignored() -> None:
    other = {"choices": [{"index": 1, "delta": {"content": "second choice"}}]}
    events = run(upstream_for(), [text("first"), other, finish()])
    assert "second choice" not in json.dumps(events)


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        (
            [finish("stop", usage=usage(100, 7, cached=40))],
            message_delta("end_turn", output=7, input=60, cached=40),
        ),
        (
            [finish("stop"), {"id": "x", "choices": [], "usage": usage(100, 7)}],
            message_delta("end_turn", output=7, input=100),
        ),
        (
            [finish("stop", x_groq={"id": "req_1", "usage": usage(100, 7)})],
            message_delta("end_turn", output=7, input=100),
        ),
        # Groq: usage on the finish chunk and again on a trailing chunk: counted once
        (
            [
                finish("stop", x_groq={"usage": usage(100, 7)}),
                {"id": "x", "choices": [], "usage": usage(100, 7)},
            ],
            message_delta("end_turn", output=7, input=100),
        ),
        # latest wins
        (
            [chunk({"content": "a"}, usage=usage(90, 1)), finish("stop", usage=usage(100, 7))],
            message_delta("end_turn", output=7, input=100),
        ),
        ([finish("stop", usage=None)], message_delta("end_turn")),
    ],
    ids=["finish-chunk", "trailing-chunk", "x_groq", "twice", "latest", "none"],
)
def test_usage_reported_in_message_delta(
    chunks: list[dict[str, Any]], expected: dict[str, Any]
) -> None:
    events = run(upstream_for(), [text("hi"), *chunks])
    check_grammar(events)
    assert events[-2] == expected


def test_input_estimate_used_when_provider_sends_no_usage() -> None:
    translator = StreamTranslator(upstream_for(), input_tokens=321)
    assert translator.start()[0]["message"]["usage"] == {"input_tokens": 321, "output_tokens": 0}
    translator.feed(text("x"))
    assert translator.finish()[-2]["usage"]["input_tokens"] == 321


@pytest.mark.parametrize(
    ("payload", "error_class"),
    [
        ({"error": {"message": "Internal failure", "type": "server_error"}}, ApiError),
        ({"error": {"message": "Rate limited", "status_code": 429}}, RateLimitError),
        ({"error": {"message": "Please reduce the length of the messages"}}, InvalidRequestError),
        (
            {
                "error": {
                    "message": "tool call validation failed",
                    "code": "tool_use_failed",
                    "failed_generation": "<|tool_call|>...",
                }
            },
            ProxyError,
        ),
    ],
)
def test_error_inside_stream_raises(payload: dict[str, Any], error_class: type[ProxyError]) -> None:
    translator = StreamTranslator(upstream_for())
    translator.start()
    translator.feed(text("partial"))
    with pytest.raises(error_class) as info:
        translator.feed(payload)
    assert isinstance(info.value, ProxyError)
    assert info.value.body()["type"] == "error"


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_stop_reason_mapping(finish_reason: str | None, stop_reason: str) -> None:
    chunks = [text("x")] + ([finish(finish_reason)] if finish_reason else [])
    events = run(upstream_for(), chunks)
    assert events[-2]["delta"] == {"stop_reason": stop_reason, "stop_sequence": None}


@pytest.mark.parametrize("finish_reason", ["stop", "tool_calls"])
def test_stop_reason_tool_use_whenever_a_tool_use_was_emitted(finish_reason: str) -> None:
    events = run(
        upstream_for(TOOLS), [tool(0, id="c", name="Bash", args="{}"), finish(finish_reason)]
    )
    check_grammar(events)
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    "cut",
    ['{"file_path": "/w/big.txt", "content": "line 1\\nline 2', '{"command": "ls -la"'],
    ids=["inside-a-string", "after-a-value"],
)
def test_a_call_the_answer_budget_cut_off_stands_with_stop_reason_max_tokens(cut: str) -> None:
    """As on Anthropic's API: the client gets the call as far as it went and `max_tokens`, so
    Claude Code tells the model its call was cut off. An error would make it resend the same
    request, to be cut off again."""
    events = run(upstream_for(TOOLS), [tool(0, id="c", name="Bash", args=cut), finish("length")])
    blocks = check_grammar(events)
    assert blocks == ["tool_use"]
    sent = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta")
    assert sent == cut
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    # non-streaming agent mode folds these events into one message: the cut stays unrepaired
    [block] = accumulate_message(events)["content"]
    assert block["input"] == {INVALID_ARGUMENTS_KEY: cut}


def test_matched_stop_sequence_in_stream() -> None:
    upstream = upstream_for({"stop_sequences": ["</answer>"]})
    end = finish("stop")
    end["choices"][0]["stop_reason"] = "</answer>"
    events = run(upstream, [text("42"), end])
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "</answer>"}


def test_aliased_tool_name_maps_back_in_stream() -> None:
    long_name = "mcp__server__" + "x" * 80
    upstream = upstream_for({"tools": [{"name": long_name, "input_schema": {}}]})
    alias = upstream.payload["tools"][0]["function"]["name"]
    events = run(upstream, [tool(0, id="c", name=alias, args="{}"), finish("tool_calls")])
    assert events[1]["content_block"]["name"] == long_name


def test_unnamed_call_still_opens_at_finish() -> None:
    events = run(upstream_for(TOOLS), [tool(0, id="c", args='{"a": 1}'), finish("tool_calls")])
    assert check_grammar(events) == ["tool_use"]
    assert sdk_accumulate(events).content[0].input == {"a": 1}


def test_exactly_one_message_start_and_unique_ids_per_stream() -> None:
    upstream = upstream_for()
    first, second = StreamTranslator(upstream), StreamTranslator(upstream)
    assert first.message_id != second.message_id
    events = first.start() + first.feed(text("a")) + first.finish()
    assert sum(e["type"] == "message_start" for e in events) == 1


def test_streams_do_not_share_state() -> None:
    upstream = upstream_for(TOOLS)
    a, b = StreamTranslator(upstream), StreamTranslator(upstream)
    events_a, events_b = a.start(), b.start()
    events_a += a.feed(tool(0, id="a0", name="Bash", args='{"x": 1}'))
    events_b += b.feed(text("only text"))
    events_a += a.feed(finish("tool_calls"))
    events_b += b.feed(finish("stop"))
    events_a += a.finish()
    events_b += b.finish()
    assert check_grammar(events_a) == ["tool_use"]
    assert check_grammar(events_b) == ["text"]
    assert events_b[-2]["delta"]["stop_reason"] == "end_turn"


def test_finished_flag() -> None:
    translator = StreamTranslator(upstream_for())
    translator.start()
    translator.feed(text("x"))
    assert not translator.finished
    translator.feed(finish("stop"))
    assert translator.finished


# -- golden transcripts -----------------------------------------------------------------------


def _golden_cases() -> list[Path]:
    return sorted(GOLDEN.glob("*.sse"))


def replay(raw: bytes, upstream: Any) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    translator = StreamTranslator(upstream)
    events = translator.start()
    for sse in decoder.feed(raw):
        if sse.data == "[DONE]":
            break
        events += translator.feed(json.loads(sse.data))
    return events + translator.finish()


@pytest.mark.parametrize("path", _golden_cases(), ids=lambda p: p.stem)
def test_golden_transcript(path: Path) -> None:
    expected = json.loads(path.with_suffix(".events.json").read_text())
    upstream = upstream_for(expected.get("request", {}))
    events = replay(path.read_bytes(), upstream)
    check_grammar(events)
    assert normalized(events) == expected["events"]


def test_golden_transcripts_exist() -> None:
    assert len(_golden_cases()) >= 2
