"""Anthropic Messages request → OpenAI Chat Completions request: one test per rule."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from kimi_proxy.errors import CLAUDE_CODE_PROMPT_TOKENS, InvalidRequestError
from kimi_proxy.protocol.anthropic import MessagesRequest
from kimi_proxy.providers import GENERIC, GROQ, KIMI_K2, MOONSHOT, OPENROUTER, ProviderProfile
from kimi_proxy.providers.models import ModelRouter
from kimi_proxy.translate.calibration import Calibration, measure
from kimi_proxy.translate.messages import EMPTY_RESULT, IMAGE_NOT_SHOWN, INTERRUPTED_CALL
from kimi_proxy.translate.request import UpstreamRequest, anthropic_to_openai_request
from kimi_proxy.translate.response import openai_to_anthropic_message
from kimi_proxy.translate.tools import function_parameters

BIG, SMALL = KIMI_K2, "llama-3.1-8b-instant"
ROUTER = ModelRouter.default_rules(big=BIG, small=SMALL)
VISION = ModelRouter.default_rules(big="vision-model", small=SMALL)  # in no table: takes images
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude_code"
VALID_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
PNG = "iVBORw0KGgo="


def translate(
    body: dict[str, Any],
    profile: ProviderProfile = GENERIC,
    max_output_tokens: int | None = None,
    router: ModelRouter = ROUTER,
) -> UpstreamRequest:
    request = MessagesRequest.model_validate(
        {"model": "claude-opus-4-5", "max_tokens": 1024, **body}
    )
    return anthropic_to_openai_request(
        request, router=router, profile=profile, max_output_tokens=max_output_tokens
    )


def messages(
    body: dict[str, Any], profile: ProviderProfile = GENERIC, router: ModelRouter = ROUTER
) -> list[dict[str, Any]]:
    return translate(body, profile, router=router).payload["messages"]  # type: ignore[no-any-return]


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def tool_use(id: str, name: str = "Bash", input: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input or {"command": "ls"}}


def tool_result(id: str, content: Any = "ok", **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id, "content": content, **extra}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


def image_b64() -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}


def tool_def(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The {name} tool.",
        "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}},
        **extra,
    }


def offered_names(upstream: UpstreamRequest) -> list[str]:
    return [t["function"]["name"] for t in upstream.payload.get("tools", [])]


# -- system prompt ----------------------------------------------------------------------------


def test_system_string_becomes_leading_system_message() -> None:
    assert messages({"system": "Be brief.", "messages": [user("hi")]}) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_system_blocks_join_and_drop_cache_control_and_billing_header() -> None:
    system = [
        text("x-anthropic-billing-header: cc_version=2.1.328.b7f; cc_entrypoint=sdk-cli;"),
        text("You are a Claude agent.", cache_control={"type": "ephemeral"}),
        text("Work carefully.", cache_control={"type": "ephemeral"}),
    ]
    upstream = translate({"system": system, "messages": [user("hi")]})
    out = upstream.payload["messages"]
    assert out[0] == {"role": "system", "content": "You are a Claude agent.\n\nWork carefully."}
    assert sum(m["role"] == "system" for m in out) == 1
    raw = orjson.dumps(upstream.payload).decode()
    assert "cache_control" not in raw
    assert "billing-header" not in raw


def test_no_system_means_no_system_message() -> None:
    assert messages({"messages": [user("hi")]}) == [{"role": "user", "content": "hi"}]


# -- content ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("hello", "hello"),
        ([text("hello")], "hello"),
        ([text("one"), text("two")], "one\n\ntwo"),
        ([text("cached", cache_control={"type": "ephemeral"})], "cached"),
    ],
)
def test_user_content_string_or_text_blocks(content: Any, expected: str) -> None:
    assert messages({"messages": [user(content)]}) == [{"role": "user", "content": expected}]


@pytest.mark.parametrize("content", ["Remember X.", [text("Remember X.")]])
def test_system_role_inside_messages_stays_in_place(content: Any) -> None:
    out = messages(
        {
            "system": "top",
            "messages": [
                user("hi"),
                {"role": "system", "content": content},
                assistant("hello"),
                user("again"),
            ],
        }
    )
    assert [m["role"] for m in out] == ["system", "user", "system", "assistant", "user"]
    assert out[2] == {"role": "system", "content": "Remember X."}


@pytest.mark.parametrize(
    ("source", "url"),
    [
        (
            {"type": "base64", "media_type": "image/png", "data": PNG},
            f"data:image/png;base64,{PNG}",
        ),
        ({"type": "url", "url": "https://example.com/cat.png"}, "https://example.com/cat.png"),
    ],
)
def test_images_become_image_url_parts(source: dict[str, Any], url: str) -> None:
    out = messages(
        {"messages": [user([text("look"), {"type": "image", "source": source}])]}, router=VISION
    )
    assert out == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def test_document_with_text_source_is_inlined() -> None:
    doc = {
        "type": "document",
        "title": "notes.txt",
        "source": {"type": "text", "media_type": "text/plain", "data": "line one"},
    }
    out = messages({"messages": [user([doc, text("summarize")])]})
    assert len(out) == 1
    content = out[0]["content"]
    assert isinstance(content, str)
    assert "line one" in content and "notes.txt" in content
    assert content.index("line one") < content.index("summarize")


PDF = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
}


def test_pdf_document_from_the_user_is_a_clear_400() -> None:
    with pytest.raises(InvalidRequestError) as info:
        translate({"messages": [user([PDF])]})
    assert info.value.status == 400
    assert info.value.error_type == "invalid_request_error"
    assert "application/pdf" in info.value.message
    assert "not supported" in info.value.message


def test_pdf_document_a_tool_returned_is_a_note_to_the_model() -> None:
    """Claude Code's Read of a PDF returns a document block in the tool result. A 400 would
    fail this request and every later one (the result stays in the history): the model reads
    a note saying the document is not shown, and how to get its text."""
    read = tool_result("t1", [text("PDF file read: /work/spec.pdf (387 bytes)"), PDF])
    out = messages({"messages": [user("go"), assistant([tool_use("t1", "Read")]), user([read])]})
    tool = out[2]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "t1"
    assert "PDF file read: /work/spec.pdf" in tool["content"]
    assert "application/pdf document not shown" in tool["content"]
    assert "pdftotext" in tool["content"] and "JVBERi0" not in tool["content"]
    assert len(out) == 3


def test_a_text_only_model_reads_a_note_where_an_image_was() -> None:
    """Kimi K2 Instruct (the default model) reads text only: an image part would make the
    provider refuse this request and every later one, so the model is told instead."""
    assert not GROQ.limits(KIMI_K2).accepts_images
    history = [
        user([text("look"), image_b64()]),
        assistant([tool_use("t1", "Read")]),
        user([tool_result("t1", [text("captured"), image_b64()])]),
    ]
    out = messages({"messages": history}, GROQ)
    assert PNG not in json.dumps(out) and "image_url" not in json.dumps(out)
    assert out[0] == {"role": "user", "content": f"look\n\n{IMAGE_NOT_SHOWN}"}
    assert out[2]["content"] == f"captured\n{IMAGE_NOT_SHOWN}"
    assert len(out) == 3


@pytest.mark.parametrize(
    "history",
    [
        [user([{"type": "server_tool_use_v9", "id": "x"}])],
        [user("hi"), assistant([{"type": "server_tool_use_v9", "id": "x"}])],
        [
            user("go"),
            assistant([tool_use("t1")]),
            user([tool_result("t1", [{"type": "server_tool_use_v9"}])]),
        ],
    ],
    ids=["user", "assistant", "tool_result"],
)
def test_unknown_block_type_is_a_400_naming_it(history: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        translate({"messages": history})
    assert info.value.status == 400
    assert "server_tool_use_v9" in info.value.message


def test_empty_text_blocks_are_dropped() -> None:
    out = messages(
        {
            "messages": [
                user([text(""), text("real")]),
                assistant([text(""), tool_use("t1")]),
                user([tool_result("t1"), text("")]),
                assistant([text("")]),
                user("next"),
            ]
        }
    )
    assert out[0] == {"role": "user", "content": "real"}
    assert out[1]["content"] is None and len(out[1]["tool_calls"]) == 1
    assert out[2]["role"] == "tool"
    # the all-empty assistant turn is not sent: never an empty assistant message
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "user"]
    for message in out:
        parts = message["content"] if isinstance(message["content"], list) else []
        assert all(p.get("text") != "" for p in parts)
        assert message["content"] != ""


def test_consecutive_same_role_messages_are_merged() -> None:
    out = messages(
        {
            "messages": [
                user("a"),
                user([text("b")]),
                assistant("c"),
                assistant([text("d")]),
                user("e"),
            ]
        }
    )
    assert out == [
        {"role": "user", "content": "a\n\nb"},
        {"role": "assistant", "content": "c\n\nd"},
        {"role": "user", "content": "e"},
    ]


def test_merged_user_messages_keep_images_as_parts() -> None:
    out = messages({"messages": [user("a"), user([image_b64()])]}, router=VISION)
    assert out == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        }
    ]


# -- thinking ---------------------------------------------------------------------------------

THINKING_HISTORY = [
    user("hi"),
    assistant(
        [
            {"type": "thinking", "thinking": "secret plan", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque-redacted"},
            text("hello"),
        ]
    ),
    user("more"),
]


def test_thinking_is_not_sent_as_text() -> None:
    upstream = translate({"messages": THINKING_HISTORY})
    out = upstream.payload["messages"]
    assert out[1] == {"role": "assistant", "content": "hello"}
    raw = orjson.dumps(upstream.payload).decode()
    assert "secret plan" not in raw and "opaque-redacted" not in raw


@pytest.mark.parametrize("profile", [GENERIC, GROQ])
def test_thinking_dropped_where_profile_has_no_reasoning_field(profile: ProviderProfile) -> None:
    assert "reasoning_content" not in messages({"messages": THINKING_HISTORY}, profile)[1]


def test_moonshot_sends_thinking_back_as_reasoning_content() -> None:
    out = messages({"messages": THINKING_HISTORY}, MOONSHOT)
    assert out[1] == {"role": "assistant", "content": "hello", "reasoning_content": "secret plan"}


# -- tool calls and results -------------------------------------------------------------------


def test_tool_use_becomes_tool_calls_with_ids_verbatim_on_generic() -> None:
    out = messages(
        {
            "messages": [
                user("list"),
                assistant(
                    [text("Listing."), tool_use("toolu_01ABC", "Bash", {"command": "ls -la"})]
                ),
                user([tool_result("toolu_01ABC", "a\nb")]),
            ]
        }
    )
    call = out[1]["tool_calls"][0]
    assert out[1]["content"] == "Listing."
    assert call["id"] == "toolu_01ABC"
    assert call["type"] == "function"
    assert call["function"]["name"] == "Bash"
    assert json.loads(call["function"]["arguments"]) == {"command": "ls -la"}
    assert out[2] == {"role": "tool", "tool_call_id": "toolu_01ABC", "content": "a\nb"}


KIMI_HISTORY = [
    user("go"),
    assistant([tool_use("toolu_a", "Bash"), tool_use("toolu_b", "Read", {"path": "/x"})]),
    user([tool_result("toolu_b", "file"), tool_result("toolu_a", "dir")]),
    assistant([tool_use("toolu_c", "Bash")]),
    user([tool_result("toolu_c", "again")]),
]


def test_groq_rewrites_tool_ids_to_kimi_form_and_results_follow() -> None:
    out = messages({"messages": KIMI_HISTORY}, GROQ)
    assert [c["id"] for c in out[1]["tool_calls"]] == ["functions.Bash:0", "functions.Read:1"]
    assert out[2] == {"role": "tool", "tool_call_id": "functions.Bash:0", "content": "dir"}
    assert out[3] == {"role": "tool", "tool_call_id": "functions.Read:1", "content": "file"}
    assert out[4]["tool_calls"][0]["id"] == "functions.Bash:2"
    assert out[5] == {"role": "tool", "tool_call_id": "functions.Bash:2", "content": "again"}
    assert len(out) == 6


def test_groq_tool_ids_are_deterministic() -> None:
    assert messages({"messages": KIMI_HISTORY}, GROQ) == messages({"messages": KIMI_HISTORY}, GROQ)


def test_tool_results_follow_the_call_in_call_order_then_user_text() -> None:
    out = messages(
        {
            "messages": [
                user("go"),
                assistant([tool_use("t1"), tool_use("t2"), tool_use("t3")]),
                user(
                    [
                        tool_result("t3", "three"),
                        text("and then?"),
                        tool_result("t1", "one"),
                        tool_result("t2", "two"),
                    ]
                ),
            ]
        }
    )
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "tool", "tool", "user"]
    assert [(m["tool_call_id"], m["content"]) for m in out[2:5]] == [
        ("t1", "one"),
        ("t2", "two"),
        ("t3", "three"),
    ]
    assert out[5] == {"role": "user", "content": "and then?"}


@pytest.mark.parametrize(
    ("content", "is_error", "expected"),
    [
        ("plain", False, "plain"),
        ([text("first"), text("second")], False, "first\nsecond"),
        ("boom", True, "Error: boom"),
        ([text("bad")], True, "Error: bad"),
        ("", False, EMPTY_RESULT),
        ([], False, EMPTY_RESULT),
        (None, False, EMPTY_RESULT),
        ([text("")], False, EMPTY_RESULT),
    ],
)
def test_tool_result_content_forms(content: Any, is_error: bool, expected: str) -> None:
    out = messages(
        {
            "messages": [
                user("go"),
                assistant([tool_use("t1")]),
                user([tool_result("t1", content, is_error=is_error)]),
            ]
        }
    )
    assert out[2] == {"role": "tool", "tool_call_id": "t1", "content": expected}
    assert len(out) == 3


def test_tool_result_images_are_attached_as_image_parts() -> None:
    out = messages(
        {
            "messages": [
                user("screenshot"),
                assistant([tool_use("t1", "Screenshot")]),
                user(
                    [tool_result("t1", [text("captured"), image_b64()]), text("what do you see?")]
                ),
            ]
        },
        router=VISION,
    )
    tool_message = out[2]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "t1"
    assert "captured" in tool_message["content"]
    assert PNG not in tool_message["content"] and "base64" not in tool_message["content"]
    assert out[3] == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "text", "text": "what do you see?"},
        ],
    }


@pytest.mark.parametrize("followed_by", ["end", "user_text", "assistant"])
def test_orphan_tool_use_gets_placeholder_tool_message(followed_by: str) -> None:
    history = [user("go"), assistant([tool_use("t1")])]
    if followed_by == "user_text":
        history.append(user("never mind"))
    elif followed_by == "assistant":
        history.append(assistant("moving on"))
    out = messages({"messages": history})
    assert out[2] == {"role": "tool", "tool_call_id": "t1", "content": INTERRUPTED_CALL}
    if followed_by == "user_text":
        assert out[3] == {"role": "user", "content": "never mind"}


def test_orphan_result_without_call_becomes_user_text() -> None:
    out = messages(
        {
            "messages": [
                user("go"),
                assistant("no tools here"),
                user([tool_result("toolu_ghost", "stale output"), text("continue")]),
            ]
        }
    )
    assert all(m["role"] != "tool" for m in out)
    last = out[-1]
    assert last["role"] == "user"
    assert "toolu_ghost" in last["content"] and "stale output" in last["content"]
    assert last["content"].index("stale output") < last["content"].index("continue")


def test_partial_results_leave_the_rest_interrupted() -> None:
    out = messages(
        {
            "messages": [
                user("go"),
                assistant([tool_use("t1"), tool_use("t2")]),
                user([tool_result("t2", "two")]),
            ]
        }
    )
    assert out[2] == {"role": "tool", "tool_call_id": "t1", "content": INTERRUPTED_CALL}
    assert out[3] == {"role": "tool", "tool_call_id": "t2", "content": "two"}


# -- tools ------------------------------------------------------------------------------------


def test_tool_parameters_are_cleaned_input_schema() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"path": {"type": "string", "description": "where"}},
        "required": ["path"],
        "additionalProperties": False,
    }
    upstream = translate(
        {
            "messages": [user("hi")],
            "tools": [{"name": "Read", "description": "Read a file.", "input_schema": schema}],
        }
    )
    assert upstream.payload["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "Read",
                "description": "Read a file.",
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string", "description": "where"}},
                    "required": ["path"],
                    "additionalProperties": False,
                },
            },
        }
    ]


def test_tool_definitions_follow_the_request_not_an_earlier_one() -> None:
    """Definitions are cached across requests (Claude Code resends the same tools each time);
    a tool whose schema or description changed under the same name is sent as it is now."""

    def offered(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        tool = {"name": "Run", "description": description, "input_schema": schema}
        payload = translate({"messages": [user("hi")], "tools": [tool]}).payload
        return payload["tools"][0]["function"]  # type: ignore[no-any-return]

    first = {"type": "object", "properties": {"cmd": {"type": "string"}}}
    second = {"type": "object", "properties": {"argv": {"type": "array"}}}
    assert offered("Run it.", first)["parameters"]["properties"] == first["properties"]
    assert offered("Run it.", second)["parameters"]["properties"] == second["properties"]
    assert offered("Run it now.", second)["description"] == "Run it now."
    assert offered("Run it.", first) == offered("Run it.", first)

    # A list found whole: one changed tool among unchanged ones is still seen, and each
    # request's list is its own (the proxy adds to it for web search, agent mode).
    def tools(schema: dict[str, Any]) -> list[dict[str, Any]]:
        listed = [
            {"name": "Read", "description": "Read a file.", "input_schema": first},
            {"name": "Run", "description": "Run it.", "input_schema": schema},
        ]
        return translate({"messages": [user("hi")], "tools": listed}).payload["tools"]  # type: ignore[no-any-return]

    before = tools(first)
    before.append({"type": "function", "function": {"name": "extra"}})
    after = tools(second)
    assert [t["function"]["name"] for t in after] == ["Read", "Run"]
    assert after[1]["function"]["parameters"]["properties"] == second["properties"]
    again = tools(first)
    assert [t["function"]["name"] for t in again] == ["Read", "Run"]
    assert again[1]["function"]["parameters"]["properties"] == first["properties"]


@pytest.mark.parametrize(
    "schema", [None, {}, {"properties": {"a": {"type": "string"}}}, {"type": "object"}]
)
def test_tool_parameters_always_object_with_properties(schema: Any) -> None:
    tool: dict[str, Any] = {"name": "T", "description": "d"}
    if schema is not None:
        tool["input_schema"] = schema
    params = translate({"messages": [user("hi")], "tools": [tool]}).payload["tools"][0]
    params = params["function"]["parameters"]
    assert params["type"] == "object"
    assert isinstance(params["properties"], dict)
    assert "$schema" not in params


def _tool_search_request(reference: str | None) -> dict[str, Any]:
    history: list[dict[str, Any]] = [user("edit the notebook")]
    if reference is not None:
        history += [
            assistant([tool_use("ts1", "ToolSearch", {"query": f"select:{reference}"})]),
            user(
                [
                    tool_result("ts1", [{"type": "tool_reference", "tool_name": reference}]),
                    text("Tool loaded."),
                ]
            ),
        ]
    return {
        "messages": history,
        "tools": [
            tool_def("Bash"),
            tool_def("ToolSearch"),
            tool_def("NotebookEdit", defer_loading=True),
            {
                "name": "DeferredToolPlaceholder",
                "defer_loading": True,
                "description": "Reserved placeholder that keeps deferred tool loading active; "
                "never call this tool.",
                "input_schema": {"type": "object", "properties": {}},
            },
        ],
    }


def test_deferred_tool_absent_until_referenced() -> None:
    assert offered_names(translate(_tool_search_request(None))) == ["Bash", "ToolSearch"]


def test_deferred_tool_offered_once_a_tool_reference_names_it() -> None:
    upstream = translate(_tool_search_request("NotebookEdit"))
    assert offered_names(upstream) == ["Bash", "ToolSearch", "NotebookEdit"]
    out = upstream.payload["messages"]
    reference = out[2]
    assert reference["role"] == "tool" and reference["tool_call_id"] == "ts1"
    assert "NotebookEdit" in reference["content"]
    assert "The NotebookEdit tool." in reference["content"]
    assert '"x":{"type":"string"}' in reference["content"].replace(" ", "")
    assert out[3] == {"role": "user", "content": "Tool loaded."}


def test_never_call_placeholder_is_never_offered() -> None:
    upstream = translate(_tool_search_request("DeferredToolPlaceholder"))
    assert "DeferredToolPlaceholder" not in offered_names(upstream)


def test_server_tools_are_dropped() -> None:
    upstream = translate(
        {
            "messages": [user("hi")],
            "tools": [
                tool_def("Bash"),
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
                {"type": "text_editor_20250124", "name": "str_replace_editor"},
            ],
        }
    )
    assert offered_names(upstream) == ["Bash"]


def test_a_request_offering_only_server_tools_is_refused_saying_what_to_use() -> None:
    """A server tool the proxy does not run, offered alone: answered without it, the model's
    guess would pass for its results (`web_search` the proxy runs: tests/search)."""
    code = {"type": "code_execution_20250522", "name": "code_execution"}
    with pytest.raises(InvalidRequestError, match="cannot run code_execution") as raised:
        translate({"messages": [user("Run this")], "tools": [code]})
    assert "Anthropic's API only" in raised.value.message


def test_custom_type_tool_is_kept() -> None:
    upstream = translate({"messages": [user("hi")], "tools": [tool_def("Bash", type="custom")]})
    assert offered_names(upstream) == ["Bash"]


def test_tools_limited_to_profile_max() -> None:
    tools = [tool_def(f"t{i}") for i in range(GROQ.max_tools + 5)]
    upstream = translate({"messages": [user("hi")], "tools": tools}, GROQ)
    assert len(upstream.payload["tools"]) == GROQ.max_tools


LONG_NAME = "mcp__some_server_with_a_really_long_name__and_an_even_longer_tool_name_here"
ODD_NAME = "mcp.server/tool name"


@pytest.mark.parametrize("name", [LONG_NAME, ODD_NAME])
def test_invalid_tool_names_get_a_safe_alias_that_maps_back(name: str) -> None:
    body = {
        "messages": [user("go"), assistant([tool_use("t1", name)]), user([tool_result("t1")])],
        "tools": [tool_def(name), tool_def("Bash")],
        "tool_choice": {"type": "tool", "name": name},
    }
    upstream = translate(body)
    alias = offered_names(upstream)[0]
    assert alias != name
    assert VALID_TOOL_NAME.match(alias)
    assert offered_names(translate(body))[0] == alias  # stable
    assert upstream.payload["messages"][1]["tool_calls"][0]["function"]["name"] == alias
    assert upstream.payload["tool_choice"] == {"type": "function", "function": {"name": alias}}
    completion = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": alias, "arguments": "{}"},
                        }
                    ],
                },
            }
        ]
    }
    reply = openai_to_anthropic_message(completion, upstream)
    assert reply["content"][0]["name"] == name


def test_distinct_long_names_get_distinct_aliases() -> None:
    names = [LONG_NAME + "_a", LONG_NAME + "_b"]
    upstream = translate({"messages": [user("hi")], "tools": [tool_def(n) for n in names]})
    aliases = offered_names(upstream)
    assert len(set(aliases)) == 2
    assert all(VALID_TOOL_NAME.match(a) for a in aliases)


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        (
            {"type": "tool", "name": "Bash"},
            {"type": "function", "function": {"name": "Bash"}},
            None,
        ),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any, parallel: bool | None) -> None:
    payload = translate(
        {"messages": [user("hi")], "tools": [tool_def("Bash")], "tool_choice": choice}
    ).payload
    assert payload["tool_choice"] == expected
    assert payload.get("parallel_tool_calls") == parallel


def test_tool_choice_tool_without_name_is_a_400() -> None:
    with pytest.raises(InvalidRequestError):
        translate(
            {"messages": [user("hi")], "tools": [tool_def("Bash")], "tool_choice": {"type": "tool"}}
        )


def test_no_tools_means_no_tools_or_tool_choice() -> None:
    payload = translate({"messages": [user("hi")], "tool_choice": {"type": "auto"}}).payload
    assert "tools" not in payload and "tool_choice" not in payload


# -- sampling parameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "model", "requested", "max_output", "expected"),
    [
        (GROQ, "claude-opus-4-5", 128000, None, 16384),
        (GROQ, "claude-opus-4-5", 1000, None, 1000),
        (GROQ, "claude-opus-4-5", 128000, 8000, 8000),
        (GROQ, "claude-opus-4-5", 500, 8000, 500),
        (GROQ, "claude-opus-4-5", 128000, 100000, 16384),
        (MOONSHOT, "claude-opus-4-5", 128000, None, 32768),
    ],
)
def test_max_tokens_clamped(
    profile: ProviderProfile, model: str, requested: int, max_output: int | None, expected: int
) -> None:
    upstream = translate(
        {"model": model, "max_tokens": requested, "messages": [user("hi")]},
        profile,
        max_output_tokens=max_output,
    )
    assert upstream.payload["max_tokens"] == expected


def test_groq_kimi_limits() -> None:
    upstream = translate({"messages": [user("hi")]}, GROQ)
    assert upstream.upstream_model == KIMI_K2
    assert upstream.limits.output_tokens == 16384
    assert upstream.limits.context_window == 262144


def test_stop_sequences_become_stop_capped_at_four() -> None:
    upstream = translate(
        {"messages": [user("hi")], "stop_sequences": ["a", "", "b", "c", "d", "e"]}
    )
    assert upstream.payload["stop"] == ["a", "b", "c", "d"]
    assert upstream.stop_sequences == ("a", "b", "c", "d")


def test_no_stop_sequences_means_no_stop() -> None:
    assert "stop" not in translate({"messages": [user("hi")]}).payload


@pytest.mark.parametrize(
    ("profile", "expected_temperature"), [(GENERIC, 0.5), (GROQ, 0.5), (MOONSHOT, 0.3)]
)
def test_temperature_and_top_p(profile: ProviderProfile, expected_temperature: float) -> None:
    payload = translate(
        {"messages": [user("hi")], "temperature": 0.5, "top_p": 0.9}, profile
    ).payload
    assert payload["temperature"] == pytest.approx(expected_temperature)
    assert payload["top_p"] == 0.9


def test_sampling_parameters_absent_unless_given() -> None:
    payload = translate({"messages": [user("hi")]}).payload
    assert not {"temperature", "top_p", "top_k"} & payload.keys()


@pytest.mark.parametrize(
    ("profile", "sent"), [(GROQ, False), (MOONSHOT, False), (GENERIC, False), (OPENROUTER, True)]
)
def test_top_k_only_where_supported(profile: ProviderProfile, sent: bool) -> None:
    payload = translate({"messages": [user("hi")], "top_k": 40}, profile).payload
    assert ("top_k" in payload) is sent
    assert profile.supports_top_k is sent


@pytest.mark.parametrize("stream", [True, False])
def test_stream_flag_and_usage_option(stream: bool) -> None:
    payload = translate({"messages": [user("hi")], "stream": stream}).payload
    assert payload["stream"] is stream
    assert ("stream_options" in payload) is stream
    if stream:
        assert payload["stream_options"] == {"include_usage": True}


def test_claude_code_extra_fields_accepted_and_not_forwarded() -> None:
    upstream = translate(
        {
            "messages": [user("hi")],
            "thinking": {"type": "adaptive", "display": "updates"},
            "output_config": {"effort": "high"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "metadata": {"user_id": '{"device_id": "abc"}'},
            "some_future_field": {"x": 1},
        }
    )
    assert set(upstream.payload) == {"model", "messages", "max_tokens", "stream"}


# -- models -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_model", "upstream_model"),
    [
        ("claude-haiku-4-5-20251001", SMALL),
        ("claude-3-5-HAIKU-latest", SMALL),
        ("claude-opus-5-5", BIG),
        ("claude-sonnet-4-5", BIG),
        ("some-other-model", BIG),
    ],
)
def test_model_mapping(client_model: str, upstream_model: str) -> None:
    upstream = translate({"model": client_model, "messages": [user("hi")]})
    assert upstream.upstream_model == upstream_model
    assert upstream.payload["model"] == upstream_model
    assert upstream.client_model == client_model


# -- real Claude Code requests ----------------------------------------------------------------

ALLOWED_MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id"}


def _captured_requests() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    return sorted(
        p
        for p in FIXTURES.glob("*.json")
        if isinstance(data := json.loads(p.read_text()), dict) and "messages" in data
    )


def test_first_claude_code_request_translates() -> None:
    path = FIXTURES / "first_request.json"
    if not path.exists():
        pytest.skip("tests/fixtures/claude_code/first_request.json not captured yet")
    body = json.loads(path.read_text())
    request = MessagesRequest.model_validate(body)
    upstream = anthropic_to_openai_request(request, router=ROUTER, profile=GROQ)
    names = offered_names(upstream)
    assert names
    assert all(VALID_TOOL_NAME.match(n) for n in names)
    assert upstream.payload["max_tokens"] <= 16384
    assert upstream.payload["messages"][0]["role"] == "system"
    # what doctor and the tokens-a-minute error quote as one Claude Code request's size
    estimate = Calibration().estimate(measure(upstream.payload))  # before any calibration
    assert 0.9 < estimate / CLAUDE_CODE_PROMPT_TOKENS < 1.1


@pytest.mark.parametrize("path", _captured_requests(), ids=lambda p: p.stem)
@pytest.mark.parametrize("profile", [GROQ, MOONSHOT, GENERIC], ids=lambda p: p.name)
def test_captured_claude_code_requests_are_provider_clean(
    path: Path, profile: ProviderProfile
) -> None:
    body = json.loads(path.read_text())
    upstream = anthropic_to_openai_request(
        MessagesRequest.model_validate(body), router=ROUTER, profile=profile
    )
    payload = upstream.payload
    assert all(VALID_TOOL_NAME.match(n) for n in offered_names(upstream))
    assert "DeferredToolPlaceholder" not in offered_names(upstream)
    assert payload["max_tokens"] <= upstream.limits.output_tokens
    raw = orjson.dumps(payload).decode()
    assert "cache_control" not in raw and "x-anthropic-billing-header" not in raw
    for message in payload["messages"]:
        assert set(message) <= ALLOWED_MESSAGE_KEYS | {"reasoning_content"}, message.keys()
        assert message["content"] not in ("", [])
        if message["role"] == "assistant":
            assert message["content"] is not None or message.get("tool_calls")
    for tool in payload.get("tools", []):
        params = tool["function"]["parameters"]
        assert params["type"] == "object" and "properties" in params
        assert "$schema" not in orjson.dumps(params).decode()


def test_tool_search_followup_loads_the_referenced_tool() -> None:
    path = FIXTURES / "tool_search_followup.json"
    if not path.exists():
        pytest.skip("tests/fixtures/claude_code/tool_search_followup.json not captured yet")
    body = json.loads(path.read_text())
    upstream = anthropic_to_openai_request(
        MessagesRequest.model_validate(body), router=ROUTER, profile=GROQ
    )
    names = offered_names(upstream)
    assert "NotebookEdit" in names and "DeferredToolPlaceholder" not in names
    tool_messages = [m for m in upstream.payload["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1
    assert tool_messages[0]["tool_call_id"] == "functions.ToolSearch:0"
    assert "NotebookEdit" in tool_messages[0]["content"]
    assert "Jupyter notebook" in tool_messages[0]["content"]


def test_schema_cleaning_keeps_property_names_and_values() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "examples": {
                "type": "array",
                "examples": [["a"]],
                "items": {"$id": "x", "type": "string"},
            },
            "deprecated": {"type": "boolean", "default": {"examples": 1}},
            "mode": {"anyOf": [{"const": "a", "$comment": "c"}, {"enum": ["$schema"]}]},
        },
        "required": ["examples"],
    }
    cleaned = function_parameters(schema)
    assert cleaned == {
        "type": "object",
        "properties": {
            "examples": {"type": "array", "items": {"type": "string"}},
            "deprecated": {"type": "boolean", "default": {"examples": 1}},
            "mode": {"anyOf": [{"const": "a"}, {"enum": ["$schema"]}]},
        },
        "required": ["examples"],
    }


def test_model_rules_are_configurable() -> None:
    from kimi_proxy.config.settings import Settings

    router = Settings(
        model="big-m",
        small_model="small-m",
        model_rules="haiku=small, opus=moonshotai/kimi-k2-instruct,sonnet=big",
    ).router
    assert router.resolve("claude-haiku-5-5") == "small-m"
    assert router.resolve("claude-OPUS-5-5") == "moonshotai/kimi-k2-instruct"
    assert router.resolve("claude-sonnet-5-5") == "big-m"
    assert router.resolve("anything-else") == "big-m"
    with pytest.raises(ValueError, match="substring=target"):
        Settings(model_rules="haiku")


def test_tool_choice_naming_a_deferred_tool_offers_it() -> None:
    body = {
        "messages": [user("edit the notebook")],
        "tools": [
            {"name": "Read", "input_schema": {"type": "object"}},
            {"name": "NotebookEdit", "defer_loading": True, "input_schema": {"type": "object"}},
        ],
        "tool_choice": {"type": "tool", "name": "NotebookEdit"},
    }
    payload = translate(body).payload
    assert [t["function"]["name"] for t in payload["tools"]] == ["Read", "NotebookEdit"]
    assert payload["tool_choice"] == {"type": "function", "function": {"name": "NotebookEdit"}}
