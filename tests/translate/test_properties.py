"""Properties of the stream translator over generated, well-formed OpenAI chunk sequences.

(a) the Anthropic events always obey the stream grammar;
(b) the official anthropic SDK's accumulator rebuilds from them exactly the message that the
    non-streaming translation makes of the same completion;
(c) re-chunking the SSE bytes anywhere changes nothing.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.streams import (
    check_grammar,
    chunk,
    comparable_blocks,
    run,
    sdk_accumulate,
    upstream_for,
)

from kimi_proxy.protocol.sse import SSEDecoder, encode_events
from kimi_proxy.translate.request import UpstreamRequest
from kimi_proxy.translate.response import openai_to_anthropic_message
from kimi_proxy.translate.tools import upstream_tool_name

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOOL_NAMES = ["Bash", "Read", "mcp__server__" + "long_tool_name_" * 5]
REQUEST = {"tools": [{"name": n, "input_schema": {"type": "object"}} for n in TOOL_NAMES]}
NOISE = [
    {"content": ""},
    {"tool_calls": []},
    {},
    {"role": "assistant"},
    {"content": None, "reasoning": ""},
]

# Text that starts like Kimi's tool-call markup (held back a moment) but is not markup.
LOOKALIKES = st.sampled_from(["<", "<|", "a <", "<|tool", "<|tool_call", "x<|y", "|>"])
parts = st.text(max_size=10) | LOOKALIKES

json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
json_object = st.dictionaries(st.text(max_size=8), json_value, max_size=4)


@dataclass
class Generated:
    """One upstream answer, as stream chunks and as the equivalent non-stream completion."""

    chunks: list[dict[str, Any]]
    reasoning: str
    text: str
    calls: list[tuple[str, str, str]]  # (id, upstream name, arguments)
    finish_reason: str | None
    usage: dict[str, Any] | None
    trailing_text: str = ""
    notes: list[str] = field(default_factory=list)

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.calls:
            message["tool_calls"] = [
                {"id": id, "type": "function", "function": {"name": name, "arguments": args}}
                for id, name, args in self.calls
            ]
        completion: dict[str, Any] = {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
        }
        if self.usage is not None:
            completion["usage"] = self.usage
        return completion


def split(draw: st.DrawFn, value: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(value)), max_size=5)))
    bounds = [0, *cuts, len(value)]
    return [value[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def upstream_answers(draw: st.DrawFn, allow_trailing_text: bool = False) -> Generated:
    reasoning_parts = draw(st.lists(parts, max_size=3))
    text_parts = draw(st.lists(parts, max_size=3))
    reasoning_field = draw(st.sampled_from(["reasoning", "reasoning_content"]))
    chunks: list[dict[str, Any]] = [chunk({reasoning_field: p}) for p in reasoning_parts]
    chunks += [chunk({"content": p}) for p in text_parts]

    calls: list[tuple[str, str, str]] = []
    fragments: list[list[dict[str, Any]]] = []
    for index in range(draw(st.integers(0, 3))):
        name = upstream_tool_name(draw(st.sampled_from(TOOL_NAMES)))
        args = json.dumps(
            draw(json_object),
            ensure_ascii=draw(st.booleans()),
            separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
        )
        call_id = f"functions.{name}:{index}"
        calls.append((call_id, name, args))
        pieces = split(draw, args)
        head: dict[str, Any] = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": pieces[0]},
        }
        fragments.append(
            [head] + [{"index": index, "function": {"arguments": p}} for p in pieces[1:]]
        )
    interleave = draw(st.booleans())
    started = 0
    while any(fragments):
        # a call may start only after the calls before it have started (OpenAI index order)
        ready = [k for k, rest in enumerate(fragments) if rest and (k < started or k == started)]
        k = draw(st.sampled_from(ready)) if interleave else ready[0]
        started = max(started, k + 1)
        chunks.append(chunk({"tool_calls": [fragments[k].pop(0)]}))

    trailing = (
        draw(st.text(min_size=1, max_size=8))
        if (allow_trailing_text and calls and draw(st.booleans()))
        else ""
    )
    if trailing:
        chunks.append(chunk({"content": trailing}))

    finish_reason = draw(st.sampled_from(["stop", "tool_calls", "length", "content_filter", None]))
    usage = None
    if draw(st.booleans()):
        prompt = draw(st.integers(0, 300_000))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": draw(st.integers(0, 20_000)),
            "prompt_tokens_details": {"cached_tokens": draw(st.integers(0, prompt))},
        }
    where = draw(st.sampled_from(["finish", "trailing", "x_groq", "both"]))
    if finish_reason is not None:
        final = chunk({}, finish=finish_reason)
        if usage is not None and where in ("finish", "both"):
            final["usage"] = usage
        if usage is not None and where == "x_groq":
            final["x_groq"] = {"id": "req_1", "usage": usage}
        chunks.append(final)
    if usage is not None and (where in ("trailing", "both") or finish_reason is None):
        chunks.append({"id": "chatcmpl-x", "choices": [], "usage": usage})

    for _ in range(draw(st.integers(0, 4))):  # noise anywhere: must change nothing
        position = draw(st.integers(0, len(chunks)))
        chunks.insert(position, chunk(draw(st.sampled_from(NOISE))))
    return Generated(
        chunks, "".join(reasoning_parts), "".join(text_parts), calls, finish_reason, usage, trailing
    )


def _upstream() -> UpstreamRequest:
    return upstream_for(REQUEST)


@SETTINGS
@given(upstream_answers(allow_trailing_text=True))
def test_stream_obeys_anthropic_grammar(answer: Generated) -> None:
    events = run(_upstream(), answer.chunks)
    blocks = check_grammar(events)
    assert blocks.count("tool_use") == len(answer.calls)
    assert blocks.count("thinking") == (1 if answer.reasoning else 0)
    expected_text_blocks = (1 if answer.text else 0) + (1 if answer.trailing_text else 0)
    assert blocks.count("text") == expected_text_blocks
    assert blocks == sorted(blocks, key=["thinking", "text", "tool_use"].index) or (
        answer.trailing_text and blocks[-1] == "text"
    )
    if answer.calls:
        cut_off = answer.finish_reason == "length"
        assert events[-2]["delta"]["stop_reason"] == ("max_tokens" if cut_off else "tool_use")
    # every tool argument fragment was sent: the deltas rebuild the arguments exactly
    sent: dict[int, str] = {}
    for event in events:
        if event["type"] == "content_block_delta" and event["delta"]["type"] == "input_json_delta":
            sent[event["index"]] = sent.get(event["index"], "") + event["delta"]["partial_json"]
    tool_indexes = [i for i, kind in enumerate(blocks) if kind == "tool_use"]
    assert [sent.get(i, "") for i in tool_indexes] == [args for _, _, args in answer.calls]


@SETTINGS
@given(upstream_answers())
def test_sdk_accumulated_stream_equals_non_stream_translation(answer: Generated) -> None:
    upstream = _upstream()
    snapshot = sdk_accumulate(run(upstream, answer.chunks))
    message = openai_to_anthropic_message(answer.completion(), upstream)
    assert comparable_blocks(snapshot.content) == comparable_blocks(message["content"])
    assert snapshot.stop_reason == message["stop_reason"]
    assert snapshot.stop_sequence == message["stop_sequence"]
    assert snapshot.usage.output_tokens == message["usage"]["output_tokens"]
    if answer.usage is not None:
        assert snapshot.usage.input_tokens == message["usage"]["input_tokens"]
        assert snapshot.usage.cache_read_input_tokens == message["usage"]["cache_read_input_tokens"]
    assert snapshot.model == message["model"]


def _sse_bytes(chunks: list[dict[str, Any]], eol: str) -> bytes:
    frames = [f"data: {json.dumps(c)}{eol}{eol}" for c in chunks]
    return ("".join(frames) + f": keep-alive{eol}{eol}data: [DONE]{eol}{eol}").encode()


def _pieces(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def _decode(pieces: list[bytes]) -> list[Any]:
    decoder = SSEDecoder()
    return [event for piece in pieces for event in decoder.feed(piece)]


def _strip_ids(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = json.loads(json.dumps(events))
    for event in out:
        event.get("message", {}).pop("id", None)
        event.get("content_block", {}).pop("id", None)
    return out


@SETTINGS
@given(upstream_answers(allow_trailing_text=True), st.sampled_from(["\n", "\r\n", "\r"]), st.data())
def test_rechunking_sse_bytes_changes_nothing(
    answer: Generated, eol: str, data: st.DataObject
) -> None:
    raw = _sse_bytes(answer.chunks, eol)
    whole = _decode([raw])
    assert [e.data for e in whole] == [json.dumps(c) for c in answer.chunks] + ["[DONE]"]
    pieces = data.draw(st.composite(lambda draw: _pieces(draw, raw))())
    assert _decode(pieces) == whole

    upstream = _upstream()
    chunks = [json.loads(e.data) for e in _decode(pieces) if e.data != "[DONE]"]
    events = run(upstream, chunks)
    assert _strip_ids(events) == _strip_ids(run(upstream, answer.chunks))

    # and on the way out: our own frames survive any re-chunking too
    encoded = encode_events(events)
    out_pieces = data.draw(st.composite(lambda draw: _pieces(draw, encoded))())
    decoded = _decode(out_pieces)
    assert [e.event for e in decoded] == [e["type"] for e in events]
    assert [json.loads(e.data) for e in decoded] == events
