"""Structured output (`output_config.format`, `output_format`): where the catalog says the model
takes OpenAI's `json_schema` response format it carries the schema; elsewhere a forced tool does,
unwrapped back into a text block. Either way the answer is JSON that validates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.providers import pooled_proxy
from support.proxy import proxy_for
from support.upstream import Reply, text_stream, tool_stream

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
ANSWER = {"city": "Paris", "population": 2102650}
FIREWORKS = """
[[provider]]
name = "fireworks"
base_url = "{FIREWORKS_URL}"
keys = ["fw-test-key"]
[family.kimi]
candidates = ["fireworks:accounts/fireworks/models/kimi-k2p6"]
[route]
default = "kimi"
"""


def structured_model(body: dict[str, Any], call: int) -> Reply:
    """Answers as the request asks: JSON text for `response_format`, else the forced tool."""
    if "response_format" in body:
        return text_stream(json.dumps(ANSWER))
    names = [t["function"]["name"] for t in body.get("tools", [])]
    if "structured_output" in names:
        return tool_stream([("structured_output", ANSWER)])
    return text_stream("Paris has about two million people.")  # prose: what went wrong before


def validates(text: str) -> None:
    value = json.loads(text)
    assert set(value) == set(SCHEMA["required"])  # type: ignore[arg-type]
    assert isinstance(value["city"], str) and isinstance(value["population"], int)


def ask(client: Any, stream: bool, **shape: Any) -> Any:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 500, **shape}
    body["messages"] = [{"role": "user", "content": "Paris: city and population?"}]
    if stream:
        with client.messages.stream(**body) as answer:
            return answer.get_final_message()
    return client.messages.create(**body)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "shape",
    [
        {"extra_body": {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}},
        {"extra_body": {"output_format": {"type": "json_schema", "schema": SCHEMA}}},
    ],
    ids=["output_config", "output_format"],
)
def test_without_json_schema_support_a_forced_tool_carries_it_back_as_text(
    stream: bool, shape: dict[str, Any]
) -> None:
    with proxy_for(structured_model) as proxy:
        message = ask(proxy.client(), stream, **shape)
    [block] = message.content
    assert block.type == "text" and message.stop_reason == "end_turn"
    validates(block.text)
    sent = proxy.upstream.bodies[-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "structured_output"}}
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["city", "population"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_that_takes_json_schema_gets_it_as_the_response_format(
    tmp_path: Path, stream: bool
) -> None:
    shape = {"extra_body": {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}}
    with pooled_proxy(tmp_path, FIREWORKS, {"fireworks": structured_model}) as pool:
        message = ask(pool.harness.client(), stream, **shape)
    validates(message.content[0].text)
    sent = pool.providers["fireworks"].bodies[-1]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA, "strict": True},
    }
    assert "tools" not in sent
