"""OpenAI Chat Completion → Anthropic message (non-streaming)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from support.streams import ROUTER

from kimi_proxy.errors import ApiError
from kimi_proxy.protocol.anthropic import MessagesRequest
from kimi_proxy.providers import GENERIC, GROQ, ProviderProfile
from kimi_proxy.translate.request import UpstreamRequest, anthropic_to_openai_request
from kimi_proxy.translate.response import INVALID_ARGUMENTS_KEY, openai_to_anthropic_message

ANTHROPIC_TOOL_ID = re.compile(r"^toolu_[a-zA-Z0-9_-]+$")
CLIENT_MODEL = "claude-opus-4-5-20251101"


def upstream_for(
    body: dict[str, Any] | None = None, profile: ProviderProfile = GENERIC
) -> UpstreamRequest:
    request = MessagesRequest.model_validate(
        {
            "model": CLIENT_MODEL,
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {"name": "Bash", "input_schema": {"type": "object"}},
                {"name": "Read", "input_schema": {"type": "object"}},
            ],
            **(body or {}),
        }
    )
    return anthropic_to_openai_request(request, router=ROUTER, profile=profile)


def completion(
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = "stop",
    usage: dict[str, Any] | None = None,
    **message_extra: Any,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, **message_extra}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    result: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "moonshotai/kimi-k2",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not None:
        result["usage"] = usage
    return result


def call(id: str | None, name: str, arguments: str) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if id is not None:
        value["id"] = id
    return value


def test_message_shape_and_client_model() -> None:
    reply = openai_to_anthropic_message(completion("Hello!"), upstream_for())
    assert reply["type"] == "message"
    assert reply["role"] == "assistant"
    assert reply["model"] == CLIENT_MODEL
    assert reply["content"] == [{"type": "text", "text": "Hello!"}]
    assert reply["stop_reason"] == "end_turn"
    assert reply["stop_sequence"] is None
    assert reply["id"].startswith("msg_")


def test_message_ids_are_unique_per_call() -> None:
    upstream = upstream_for()
    ids = {openai_to_anthropic_message(completion("x"), upstream)["id"] for _ in range(50)}
    assert len(ids) == 50


def test_text_and_tool_use_blocks() -> None:
    reply = openai_to_anthropic_message(
        completion(
            "Let me look.",
            [
                call("functions.Bash:0", "Bash", '{"command": "ls"}'),
                call("call_xyz", "Read", '{"path": "/etc/hosts"}'),
            ],
            "tool_calls",
        ),
        upstream_for(),
    )
    text, first, second = reply["content"]
    assert text == {"type": "text", "text": "Let me look."}
    assert (first["type"], first["name"], first["input"]) == ("tool_use", "Bash", {"command": "ls"})
    assert (second["name"], second["input"]) == ("Read", {"path": "/etc/hosts"})
    for block in (first, second):
        assert ANTHROPIC_TOOL_ID.match(block["id"]), block["id"]
    assert first["id"] != second["id"]
    assert reply["stop_reason"] == "tool_use"


def test_tool_ids_unique_across_responses_even_when_provider_repeats_them() -> None:
    upstream = upstream_for()
    reply = completion(None, [call("functions.Bash:0", "Bash", "{}")], "tool_calls")
    ids = {openai_to_anthropic_message(reply, upstream)["content"][0]["id"] for _ in range(20)}
    assert len(ids) == 20


def test_tool_call_without_id_still_gets_a_valid_id() -> None:
    reply = openai_to_anthropic_message(
        completion(None, [call(None, "Bash", "{}")], "tool_calls"), upstream_for()
    )
    assert ANTHROPIC_TOOL_ID.match(reply["content"][0]["id"])


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"command": "ls"}', {"command": "ls"}),
        ("", {}),
        ("   ", {}),
        ('{"command": "ls"', {"command": "ls"}),  # truncated after a whole value: repaired
        ('{"command": "echo \\" hi', {INVALID_ARGUMENTS_KEY: '{"command": "echo \\" hi'}),
        ('{"command": "a\\\\"', {"command": "a\\"}),  # the backslash is escaped: string closed
        ("{'command': 'ls'}", {"command": "ls"}),  # python-style quotes: repaired
        ('["not", "an", "object"]', {INVALID_ARGUMENTS_KEY: '["not", "an", "object"]'}),
        ("42", {INVALID_ARGUMENTS_KEY: "42"}),
    ],
)
def test_tool_arguments_parsed_or_repaired(arguments: str, expected: dict[str, Any]) -> None:
    reply = openai_to_anthropic_message(
        completion(None, [call("c1", "Bash", arguments)], "tool_calls"), upstream_for()
    )
    assert reply["content"][0]["input"] == expected


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_a_leading_thinking_block(field: str) -> None:
    reply = openai_to_anthropic_message(
        completion("Answer.", **{field: "Let me think."}), upstream_for()
    )
    assert reply["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": ""},
        {"type": "text", "text": "Answer."},
    ]


def test_empty_content_gives_no_empty_text_block() -> None:
    reply = openai_to_anthropic_message(
        completion("", [call("c1", "Bash", "{}")], "tool_calls"), upstream_for()
    )
    assert [b["type"] for b in reply["content"]] == ["tool_use"]


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("tool_calls", "tool_use"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_stop_reasons(finish_reason: str | None, stop_reason: str) -> None:
    tool_calls = [call("c1", "Bash", "{}")] if finish_reason == "tool_calls" else None
    reply = openai_to_anthropic_message(completion("x", tool_calls, finish_reason), upstream_for())
    assert reply["stop_reason"] == stop_reason
    assert reply["stop_sequence"] is None


@pytest.mark.parametrize("finish", ["length", "tool_calls"])
def test_arguments_cut_off_are_never_repaired(finish: str) -> None:
    """Repairing `{"content": "half a fi` would make a Write run with half a file, whether the
    answer budget ran out or the provider calls the call complete."""
    cut = '{"file_path": "/w/big.txt", "content": "half a fi'
    reply = openai_to_anthropic_message(
        completion(None, [call("c1", "Write", cut)], finish), upstream_for()
    )
    [block] = reply["content"]
    assert block["input"] == {INVALID_ARGUMENTS_KEY: cut}
    assert reply["stop_reason"] == ("max_tokens" if finish == "length" else "tool_use")


def test_any_tool_use_makes_stop_reason_tool_use() -> None:
    reply = openai_to_anthropic_message(
        completion(None, [call("c1", "Bash", "{}")], "stop"), upstream_for()
    )
    assert reply["stop_reason"] == "tool_use"


def test_matched_stop_sequence() -> None:
    upstream = upstream_for({"stop_sequences": ["END", "###"]})
    done = completion("text")
    done["choices"][0]["stop_reason"] = "###"
    reply = openai_to_anthropic_message(done, upstream)
    assert (reply["stop_reason"], reply["stop_sequence"]) == ("stop_sequence", "###")


@pytest.mark.parametrize("provider_stop", ["OTHER", 151645, None])
def test_unmatched_provider_stop_reason_is_end_turn(provider_stop: Any) -> None:
    upstream = upstream_for({"stop_sequences": ["END"]})
    done = completion("text")
    done["choices"][0]["stop_reason"] = provider_stop
    reply = openai_to_anthropic_message(done, upstream)
    assert (reply["stop_reason"], reply["stop_sequence"]) == ("end_turn", None)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 0},
        ),
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 64},
            },
            {"input_tokens": 36, "output_tokens": 20, "cache_read_input_tokens": 64},
        ),
        (None, {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}),
    ],
)
def test_usage(usage: dict[str, Any] | None, expected: dict[str, int]) -> None:
    reply = openai_to_anthropic_message(completion("x", usage=usage), upstream_for())
    assert {k: reply["usage"][k] for k in expected} == expected
    assert all(isinstance(v, int) for v in reply["usage"].values())


def test_no_choices_is_an_api_error() -> None:
    with pytest.raises(ApiError):
        openai_to_anthropic_message({"choices": []}, upstream_for())


@pytest.mark.parametrize(
    "provider_id", ["call_abc123", "functions.Bash:0", "chatcmpl-tool-9f/x", "call_???~~~>>>"]
)
def test_tool_id_round_trip_reaches_provider_as_its_original_id(provider_id: str) -> None:
    reply = openai_to_anthropic_message(
        completion(None, [call(provider_id, "Bash", '{"command": "pwd"}')], "tool_calls"),
        upstream_for(),
    )
    block = reply["content"][0]
    assert ANTHROPIC_TOOL_ID.match(block["id"])
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": reply["content"]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "/home"}],
        },
    ]
    messages = upstream_for({"messages": history}).payload["messages"]
    assert messages[1]["tool_calls"][0]["id"] == provider_id
    assert messages[2] == {"role": "tool", "tool_call_id": provider_id, "content": "/home"}


def test_groq_profile_sends_history_ids_in_kimi_form() -> None:
    reply = openai_to_anthropic_message(
        completion(None, [call("call_abc", "Bash", "{}")], "tool_calls"), upstream_for()
    )
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": reply["content"]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": reply["content"][0]["id"], "content": "ok"}
            ],
        },
    ]
    messages = upstream_for({"messages": history}, GROQ).payload["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "functions.Bash:0"
    assert messages[2]["tool_call_id"] == "functions.Bash:0"
