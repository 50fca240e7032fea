"""OpenAI Chat Completion → Anthropic message (non-streaming), and the pieces both directions
of response translation share: stop reasons, usage, tool arguments, message ids."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Any

import json_repair
import orjson

from kimi_proxy.errors import ApiError

from .kimi_markup import split_markup
from .request import UpstreamRequest
from .tools import anthropic_tool_id, new_nonce

log = logging.getLogger("kimi_proxy.response")

STOP_REASON_BY_FINISH = {
    "stop": "end_turn",
    "eos": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
INVALID_ARGUMENTS_KEY = "INVALID_JSON_ARGUMENTS"
REASONING_FIELDS = ("reasoning_content", "reasoning")


def new_message_id() -> str:
    """Unique per response: Claude Code merges turns that share an id."""
    return f"msg_{secrets.token_hex(12)}"


def stop_reason(
    finish_reason: str | None, *, used_tools: bool, matched_stop: str | None
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence): `max_tokens` when the answer budget ran out (even inside a
    tool call, as Anthropic reports it), else `tool_use` exactly when a tool_use block was
    emitted."""
    if finish_reason == "length":
        return "max_tokens", None
    if used_tools:
        return "tool_use", None
    if matched_stop is not None:
        return "stop_sequence", matched_stop
    reason = STOP_REASON_BY_FINISH.get(finish_reason or "stop", "end_turn")
    # `tool_use` without a tool_use block (no calls, or all run by agent mode) would leave
    # the client waiting for calls that never come.
    return ("end_turn" if reason == "tool_use" else reason), None


def matched_stop_sequence(choice: dict[str, Any], stop_sequences: Sequence[str]) -> str | None:
    """Which stop sequence ended the text, when the provider says (vLLM's `stop_reason`)."""
    value = choice.get("stop_reason")
    return value if isinstance(value, str) and value in stop_sequences else None


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """Anthropic usage: input excludes cache reads, which are reported on their own."""
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or usage.get("cached_tokens") or 0)
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def chunk_usage(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """Usage on a chunk: OpenAI-style `usage`, or Groq's `x_groq.usage`."""
    usage = chunk.get("usage")
    if usage:
        return usage  # type: ignore[no-any-return]
    extra = chunk.get("x_groq")
    return extra.get("usage") if isinstance(extra, dict) else None


def reasoning_text(message: dict[str, Any]) -> str:
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _ends_inside_string(raw: str) -> bool:
    inside = escaped = False
    for char in raw:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = inside
        elif char == '"':
            inside = not inside
    return inside


def parse_tool_arguments(raw: str | None, *, cut_off: bool = False) -> dict[str, Any]:
    """Arguments as an object; repaired when possible, else kept raw so the client reports it.
    Never repaired when cut off by the answer budget or inside a string value: closing the
    string would make a Write run with half a file."""
    if not raw or not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if cut_off or _ends_inside_string(raw):
            return {INVALID_ARGUMENTS_KEY: raw}
        value = json_repair.loads(raw)
        log.warning("repaired invalid tool-call arguments from the provider")
    if isinstance(value, dict):
        return value
    return {INVALID_ARGUMENTS_KEY: raw}


def openai_to_anthropic_message(
    completion: dict[str, Any], upstream: UpstreamRequest, *, message_id: str | None = None
) -> dict[str, Any]:
    """Translate a non-streaming completion into an Anthropic `message`."""
    choices = completion.get("choices") or []
    if not choices:
        raise ApiError("The provider returned a completion with no choices.")
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    # Kimi's own tool-call markup, where a provider left it in the text or the reasoning
    reasoning, recovered = split_markup(reasoning_text(message))
    text = message.get("content")
    if isinstance(text, str):
        text, recovered_from_text = split_markup(text)
        recovered += recovered_from_text
    calls = list(message.get("tool_calls") or []) + [
        {"id": c.id, "function": {"name": c.name, "arguments": c.arguments}} for c in recovered
    ]
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    nonce = new_nonce()
    for call in calls:
        function = call.get("function") or {}
        if upstream.structured_tool and function.get("name") == upstream.structured_tool:
            content.append({"type": "text", "text": function.get("arguments") or "{}"})
            continue
        content.append(
            {
                "type": "tool_use",
                "id": anthropic_tool_id(call.get("id"), nonce),
                "name": upstream.tool_names.to_client(function.get("name") or ""),
                "input": parse_tool_arguments(
                    function.get("arguments"), cut_off=choice.get("finish_reason") == "length"
                ),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason"),
        used_tools=any(b["type"] == "tool_use" for b in content),
        matched_stop=matched_stop_sequence(choice, upstream.stop_sequences),
    )
    return {
        "id": message_id or new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": upstream.client_model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }
