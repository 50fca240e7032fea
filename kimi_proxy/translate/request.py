"""Anthropic Messages request → OpenAI Chat Completions request. Pure: no I/O.

This module makes the payload: the provider's model, the output cap, stop sequences and the
sampling parameters the provider accepts. The conversation is translated by `messages.py`, the
tools offered by `tools.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from kimi_proxy.protocol.anthropic import (
    MessagesRequest,
)
from kimi_proxy.protocol.profile import ModelLimits, ProviderProfile

from .messages import convert_messages
from .structured import apply_structured_output, output_schema
from .thinking import apply_thinking_rules
from .tools import (
    ToolNames,
    convert_tool_choice,
    convert_tools,
    is_server_tool,
    server_tools_only,
)

log = logging.getLogger("kimi_proxy.request")


class ModelChoice(Protocol):
    """Which provider model answers a client's model id (`providers.models.ModelRouter`)."""

    def resolve(self, client_model: str) -> str: ...


@dataclass(slots=True)
class UpstreamRequest:
    """The provider payload plus what the response translators need to map back."""

    payload: dict[str, Any]
    client_model: str
    upstream_model: str
    limits: ModelLimits
    tool_names: ToolNames
    stop_sequences: tuple[str, ...] = ()
    max_tokens: int = 0  # the answer budget asked of the provider (the payload's max_tokens)
    #: The reasoning field every assistant tool-call message must carry (thinking.py), for the
    #: messages a multi-step turn adds; None: no such rule.
    reasoning_required: str | None = None
    #: The tool standing for structured output (structured.py): its call is the answer's text.
    structured_tool: str | None = None


def anthropic_to_openai_request(
    request: MessagesRequest,
    *,
    router: ModelChoice,
    profile: ProviderProfile,
    max_output_tokens: int | None = None,
    served_by: str | None = None,
) -> UpstreamRequest:
    """Translate a validated Anthropic request into the provider's Chat Completions payload.
    With `served_by` (a provider's name), the system prompt names the model and provider
    serving it."""
    model = router.resolve(request.model)
    limits = profile.limits(model)
    tools = request.tools or []
    if tools and all(is_server_tool(t) for t in tools):
        raise server_tools_only([t.name for t in tools])
    tools_by_name = {t.name: t for t in tools}
    cap = min(limits.output_tokens, max_output_tokens or limits.output_tokens)
    payload: dict[str, Any] = {
        "model": model,
        "messages": convert_messages(
            request,
            profile,
            tools_by_name,
            limits.accepts_images,
            (model, served_by) if served_by else None,
        ),
        "max_tokens": min(request.max_tokens, cap),
        "stream": request.stream,
    }
    if request.stream:
        payload["stream_options"] = {"include_usage": True}
    chosen = request.tool_choice.name if request.tool_choice is not None else None
    openai_tools = convert_tools(tools, request.messages, profile, chosen)
    if openai_tools:
        payload["tools"] = openai_tools
        if request.tool_choice is not None:
            payload["tool_choice"] = convert_tool_choice(request.tool_choice)
            if request.tool_choice.disable_parallel_tool_use:
                payload["parallel_tool_calls"] = False
    stops = tuple(s for s in request.stop_sequences or () if s)[: profile.max_stop_sequences]
    if stops:
        payload["stop"] = list(stops)
    if limits.fixed_temperature is not None:  # the only value the model accepts (Kimi K2.6)
        payload["temperature"] = limits.fixed_temperature
    elif request.temperature is not None:
        payload["temperature"] = request.temperature * profile.temperature_scale
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.top_k is not None and profile.supports_top_k:
        payload["top_k"] = request.top_k
    structured = None
    schema = output_schema(request.model_extra)
    if schema is not None:
        structured = apply_structured_output(payload, schema, limits)
    asked_thinking = (request.model_extra or {}).get("thinking")
    reasoning = apply_thinking_rules(
        payload, asked_thinking, limits, profile.reasoning_history_field
    )
    return UpstreamRequest(
        payload=payload,
        client_model=request.model,
        upstream_model=model,
        limits=limits,
        tool_names=ToolNames(tools_by_name),
        stop_sequences=stops,
        max_tokens=payload["max_tokens"],
        reasoning_required=reasoning,
        structured_tool=structured,
    )
