"""Structured output: Anthropic's `output_config.format` (and the beta spelling
`output_format`) of type `json_schema`, for the provider. Pure.

Where the catalog says the model takes it, OpenAI's `response_format: {"type": "json_schema"}`
carries the schema and the answer's text is the JSON. Elsewhere the model is given one tool,
`structured_output`, whose input is the schema, and its call comes back as a text block holding
the arguments (`blocks.py` and `response.py` unwrap it): the answer is JSON either way. The tool
is forced when the request has no tools of its own; beside them it is offered, and the system
prompt asks for it for the final answer.
"""

from __future__ import annotations

from typing import Any

from kimi_proxy.protocol.profile import ModelLimits

from .tools import function_parameters

STRUCTURED_TOOL = "structured_output"
FINAL_ANSWER_NOTE = (
    f"Give your final answer by calling {STRUCTURED_TOOL} with it (JSON matching its schema)."
)


def output_schema(extra: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema a request asks its answer to follow, or None."""
    extra = extra or {}
    config = extra.get("output_config")
    form = config.get("format") if isinstance(config, dict) else None
    form = form or extra.get("output_format")
    if isinstance(form, dict) and form.get("type") == "json_schema":
        schema = form.get("schema")
        if isinstance(schema, dict):
            return schema
    return None


def apply_structured_output(
    payload: dict[str, Any], schema: dict[str, Any], limits: ModelLimits
) -> str | None:
    """Ask the provider for JSON following `schema`; returns the tool to unwrap, or None."""
    if limits.json_schema:
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
        return None
    tool = {
        "type": "function",
        "function": {
            "name": STRUCTURED_TOOL,
            "description": "The final answer, as JSON following this schema.",
            "parameters": function_parameters(schema),
        },
    }
    if payload.get("tools"):
        payload["tools"] = [*payload["tools"], tool]
        messages = payload["messages"]
        if messages and messages[0]["role"] == "system":
            messages[0] = {
                **messages[0],
                "content": f"{messages[0]['content']}\n\n{FINAL_ANSWER_NOTE}",
            }
        else:
            messages.insert(0, {"role": "system", "content": FINAL_ANSWER_NOTE})
    else:
        payload["tools"] = [tool]
        payload["tool_choice"] = {"type": "function", "function": {"name": STRUCTURED_TOOL}}
    return STRUCTURED_TOOL
