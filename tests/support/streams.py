"""Helpers shared by the stream tests: chunk builders, an Anthropic stream grammar checker and
the official SDK's accumulator used as an oracle."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from kimi_proxy.protocol.anthropic import MessagesRequest
from kimi_proxy.providers import GENERIC, KIMI_K2, ProviderProfile
from kimi_proxy.providers.models import ModelRouter
from kimi_proxy.translate.request import UpstreamRequest, anthropic_to_openai_request
from kimi_proxy.translate.stream import StreamTranslator

ROUTER = ModelRouter.default_rules(big=KIMI_K2, small="llama-3.1-8b-instant")

Chunk = dict[str, Any]
Event = dict[str, Any]


def upstream_for(
    body: dict[str, Any] | None = None, profile: ProviderProfile = GENERIC
) -> UpstreamRequest:
    request = MessagesRequest.model_validate(
        {
            "model": "claude-opus-4-5",
            "max_tokens": 1024,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            **(body or {}),
        }
    )
    return anthropic_to_openai_request(request, router=ROUTER, profile=profile)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> Chunk:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": KIMI_K2,
        "choices": [choice],
        **extra,
    }


def text(value: str) -> Chunk:
    return chunk({"content": value})


def reasoning(value: str, field: str = "reasoning") -> Chunk:
    return chunk({field: value})


def tool(
    index: int, *, id: str | None = None, name: str | None = None, args: str | None = None
) -> Chunk:
    fragment: dict[str, Any] = {"index": index}
    if id is not None:
        fragment["id"] = id
        fragment["type"] = "function"
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    if function:
        fragment["function"] = function
    return chunk({"tool_calls": [fragment]})


def finish(reason: str = "stop", **extra: Any) -> Chunk:
    return chunk({}, finish=reason, **extra)


def usage(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        value["prompt_tokens_details"] = {"cached_tokens": cached}
    return value


def run(upstream: UpstreamRequest, chunks: Iterable[Chunk]) -> list[Event]:
    translator = StreamTranslator(upstream)
    events = translator.start()
    for item in chunks:
        events += translator.feed(item)
    events += translator.finish()
    return events


DELTA_FOR_BLOCK = {
    "text": {"text_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
    "server_tool_use": {"input_json_delta"},
    "web_search_tool_result": set(),
}
EMPTY_START = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}


def check_grammar(events: list[Event]) -> list[str]:
    """Assert the Anthropic stream grammar; return the block types in index order.

    message_start (content_block_start content_block_delta* content_block_stop)*
    message_delta message_stop — one open block at a time, indexes contiguous from 0, delta
    types matching the block, block starts empty, `ping` allowed after message_start.
    """
    assert events, "no events"
    assert events[0]["type"] == "message_start", events[0]
    start = events[0]["message"]
    assert start["content"] == [] and start["role"] == "assistant"
    assert isinstance(start["usage"]["input_tokens"], int)
    assert isinstance(start["usage"]["output_tokens"], int)
    assert events[-2]["type"] == "message_delta", events[-2]
    assert events[-1] == {"type": "message_stop"}
    assert isinstance(events[-2]["usage"]["output_tokens"], int)
    blocks: list[str] = []
    open_index: int | None = None
    open_type: str | None = None
    thinking_signed = False
    for event in events[1:-2]:
        kind = event["type"]
        if kind == "ping":
            continue
        if kind == "content_block_start":
            assert open_index is None, f"block {event['index']} started while {open_index} open"
            assert event["index"] == len(blocks), f"index {event['index']} not contiguous"
            block = event["content_block"]
            open_index, open_type = event["index"], block["type"]
            blocks.append(block["type"])
            if block["type"] in ("tool_use", "server_tool_use"):
                assert block["input"] == {}
                assert block["name"]
                assert block["id"]
            elif block["type"] == "redacted_thinking":
                assert block["data"], "redacted_thinking carries its data at start"
            elif block["type"] == "web_search_tool_result":
                assert block["tool_use_id"].startswith("srvtoolu_"), block
                assert isinstance(block["content"], (list, dict)), "results come whole at start"
            else:
                assert block == EMPTY_START[block["type"]], block
            thinking_signed = False
        elif kind == "content_block_delta":
            assert event["index"] == open_index, f"delta for block {event['index']} not open"
            assert open_type is not None
            delta_type = event["delta"]["type"]
            assert delta_type in DELTA_FOR_BLOCK[open_type], (delta_type, open_type)
            if open_type == "thinking":
                assert not thinking_signed, "delta after signature_delta"
                thinking_signed = delta_type == "signature_delta"
        elif kind == "content_block_stop":
            assert event["index"] == open_index, f"stop for block {event['index']} not open"
            open_index = open_type = None
        else:
            raise AssertionError(f"unexpected event {kind} inside the stream")
    assert open_index is None, "a block was never stopped"
    assert sum(e["type"] == "message_start" for e in events) == 1
    if "tool_use" in blocks:  # max_tokens: the answer budget ran out, maybe inside the call
        assert events[-2]["delta"]["stop_reason"] in ("tool_use", "max_tokens")
    return blocks


_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def sdk_accumulate(events: list[Event]) -> Any:
    """Rebuild the message with the official anthropic SDK's own accumulator."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        parsed = _EVENT_ADAPTER.validate_python(event)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=json_bufs)
    return snapshot


def comparable_blocks(blocks: Iterable[Any]) -> list[dict[str, Any]]:
    """Content blocks (dicts or SDK models) without tool ids, for comparison."""
    out = []
    for block in blocks:
        data = block if isinstance(block, dict) else block.model_dump()
        match data["type"]:
            case "text":
                out.append({"type": "text", "text": data["text"]})
            case "thinking":
                out.append(
                    {
                        "type": "thinking",
                        "thinking": data["thinking"],
                        "signature": data["signature"],
                    }
                )
            case "tool_use":
                out.append({"type": "tool_use", "name": data["name"], "input": data["input"]})
            case other:
                raise AssertionError(f"unexpected block {other}")
    return out
