"""A model's thinking rules, as the catalog states them (Moonshot's Kimi K2.6 enforces all
three), applied to the provider's payload. Pure.

* `thinking_param`: Anthropic's `thinking: {"type": "disabled"}` (Claude Code's titles,
  summaries, WebSearch side calls) reaches the provider's own switch, so small calls do not
  think at full cost; enabled or adaptive thinking leaves the model's default on.
* `forced_tool_choice_with_thinking = false`: a forced tool choice while thinking is refused
  by the provider, so thinking is turned off for that request (or, without a switch, the
  choice is relaxed to `auto`), with a log line saying which.
* `reasoning_required_on_tool_calls`: while thinking, every assistant message with tool calls
  carries the reasoning field; a history without it (after `/compact`, a model switch, cleared
  thinking) gets a short neutral placeholder.
"""

from __future__ import annotations

import logging
from typing import Any

from kimi_proxy.protocol.profile import ModelLimits

log = logging.getLogger("kimi_proxy.request")

REASONING_PLACEHOLDER = "(Earlier reasoning is not available.)"
DEFAULT_REASONING_FIELD = "reasoning_content"
DISABLED = {"type": "disabled"}


def apply_thinking_rules(
    payload: dict[str, Any],
    asked: Any,
    limits: ModelLimits,
    reasoning_field: str | None,
) -> str | None:
    """Apply the rules to `payload` (the request's `thinking` is `asked`); returns the field
    every later assistant tool-call message must carry, or None."""
    thinking = limits.reasoning
    switch = limits.thinking_param
    if switch and isinstance(asked, dict) and asked.get("type") == "disabled":
        payload[switch] = dict(DISABLED)
        thinking = False
    choice = payload.get("tool_choice")
    if (
        thinking
        and not limits.forced_tool_choice_with_thinking
        and choice not in (None, "auto", "none")
    ):
        if switch:
            payload[switch] = dict(DISABLED)
            thinking = False
            log.info("thinking turned off for this request: it forces a tool choice")
        else:
            payload["tool_choice"] = "auto"
            log.info("tool choice relaxed to auto: the model refuses a forced one while thinking")
    if not (thinking and limits.reasoning_required_on_tool_calls):
        return None
    field = reasoning_field or DEFAULT_REASONING_FIELD
    require_reasoning(payload["messages"], field)
    return field


def require_reasoning(messages: list[dict[str, Any]], field: str) -> None:
    """Every assistant message with tool calls carries `field` (a placeholder when empty)."""
    for message in messages:
        if (
            message.get("role") == "assistant"
            and message.get("tool_calls")
            and not message.get(field)
        ):
            message[field] = REASONING_PLACEHOLDER
