"""Tools: Anthropic tool definitions → OpenAI function tools, names and ids both ways.

* Schemas are cleaned of JSON-Schema keywords strict providers reject (`$schema`, …) and made
  `type: object` with `properties`.
* Tool search: tools with `defer_loading: true` are offered only once a `tool_reference` in a
  tool result names them (`referenced_tool_names`); the placeholder tool whose description says
  never to call it is never offered. Server tools are dropped with a log line (the server runs
  `web_search` itself, `search/`); a request offering nothing else is refused (the model's
  guess would pass for their results).
* Names must match `^[a-zA-Z0-9_-]{1,64}$` upstream; longer or odd names get a stable,
  hash-suffixed alias, mapped back in responses through `ToolNames`.
* Tool-call ids: a provider's ids (Kimi's look like `functions.Bash:0`) are carried inside the
  Anthropic id (`toolu_kp<nonce>_<base64url>`) so they go back upstream exactly as the model
  made them, while every Anthropic id stays unique and matches `^[a-zA-Z0-9_-]+$`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from kimi_proxy.errors import InvalidRequestError
from kimi_proxy.protocol.anthropic import (
    Message,
    Tool,
    ToolChoice,
    ToolReferenceBlock,
    ToolResultBlock,
)
from kimi_proxy.protocol.profile import ProviderProfile
from kimi_proxy.translate.known import Known, text_key

log = logging.getLogger("kimi_proxy.tools")

_VALID_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NEVER_CALL = re.compile(r"\b(never|do not|don't) call\b", re.IGNORECASE)
_REJECTED_SCHEMA_KEYS = frozenset({"$schema", "$id", "$comment", "examples", "deprecated"})
_OUR_ID = re.compile(r"^toolu_kp[0-9a-f]{8}_([A-Za-z0-9_-]+)$")


_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)  # name -> schema
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})  # [schema]
_SCHEMA_ONE = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedProperties",
    }
)  # schema


def clean_schema(schema: Any) -> Any:
    """Remove keywords providers reject, walking only where schemas are: property *names*
    (a parameter called `examples`) and values (`default`, `enum`, `const`) stay untouched."""
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _REJECTED_SCHEMA_KEYS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: clean_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [clean_schema(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            value = clean_schema(value)
        cleaned[key] = value
    return cleaned


def function_parameters(input_schema: dict[str, Any] | None) -> dict[str, Any]:
    schema = clean_schema(input_schema or {})
    if not isinstance(schema, dict):
        schema = {}
    schema.setdefault("type", "object")
    if schema["type"] == "object":
        schema.setdefault("properties", {})
    return schema


def upstream_tool_name(name: str) -> str:
    """A provider-safe name: unchanged when valid, else sanitized with a stable hash suffix."""
    if _VALID_NAME.match(name):
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^a-zA-Z0-9_-]', '_', name)[:55]}_{digest}"


def is_server_tool(tool: Tool) -> bool:
    return tool.type is not None and tool.type != "custom"


def is_never_call_placeholder(tool: Tool) -> bool:
    return tool.defer_loading and bool(_NEVER_CALL.search(tool.description or ""))


def offered_tools(tools: Sequence[Tool], referenced: set[str]) -> list[Tool]:
    """The tools the model may call now (tool search rules applied)."""
    offered = []
    for tool in tools:
        if is_server_tool(tool):
            log.info(
                "dropping server tool %s (%s): the provider cannot run it", tool.name, tool.type
            )
        elif is_never_call_placeholder(tool):
            continue
        elif not tool.defer_loading or tool.name in referenced:
            offered.append(tool)
    return offered


def openai_tool(tool: Tool) -> dict[str, Any]:
    """The provider's definition of `tool`. Clients send the same tools with every request,
    so definitions are kept (`known.py`): the result is shared and must not be changed."""
    description = tool.description or ""
    key = (tool.name, *text_key(description))
    whole = (tool.description, tool.input_schema)
    made = _DEFINITIONS.get(key, whole)
    if made is None:
        schema = orjson.loads(orjson.dumps(tool.input_schema))  # cleaned below: a copy
        function: dict[str, Any] = {
            "name": upstream_tool_name(tool.name),
            "parameters": function_parameters(schema),
        }
        if tool.description:
            function["description"] = tool.description
        made = {"type": "function", "function": function}
        _DEFINITIONS.put(key, whole, made)
    return made


_DEFINITIONS: Known[tuple[str | None, dict[str, Any] | None], dict[str, Any]] = Known(512)
_LISTS: Known[list[tuple[str | None, dict[str, Any] | None]], list[dict[str, Any]]] = Known(64)


def render_tool_reference(tool_name: str, tools_by_name: dict[str, Tool]) -> str:
    """The text that stands for a `tool_reference`: the loaded tool's definition."""
    tool = tools_by_name.get(tool_name)
    if tool is None:
        return f"Tool {tool_name} was requested but is not available."
    schema = orjson.dumps(function_parameters(tool.input_schema)).decode()
    return (
        f"Tool loaded: {upstream_tool_name(tool.name)} is now available to call.\n"
        f"Description: {tool.description or '(none)'}\nParameters (JSON Schema): {schema}"
    )


class ToolNames:
    """Maps provider-side tool names back to the client's names for one request."""

    __slots__ = ("_by_upstream",)

    def __init__(self, client_names: Iterable[str] = ()) -> None:
        self._by_upstream = {upstream_tool_name(n): n for n in client_names}

    def to_client(self, upstream_name: str) -> str:
        return self._by_upstream.get(upstream_name, upstream_name)


def new_nonce() -> str:
    return secrets.token_hex(4)


def anthropic_tool_id(upstream_id: str | None, nonce: str) -> str:
    """A unique Anthropic id that carries the provider's id, reversibly."""
    if not upstream_id:
        return f"toolu_kp{nonce}_{secrets.token_hex(8)}"
    encoded = base64.urlsafe_b64encode(upstream_id.encode()).rstrip(b"=").decode()
    return f"toolu_kp{nonce}_{encoded}"


def upstream_tool_id(anthropic_id: str) -> str:
    """The provider's original id for one of our ids; any other id unchanged."""
    match = _OUR_ID.match(anthropic_id)
    if match is None:
        return anthropic_id
    encoded = match.group(1)
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return anthropic_id


def referenced_tool_names(messages: Sequence[Message]) -> set[str]:
    """Tool names loaded by tool search: every `tool_reference` inside a tool result."""
    names: set[str] = set()
    for message in messages:
        if isinstance(message.content, str):
            continue
        for block in message.content:
            if isinstance(block, ToolResultBlock) and isinstance(block.content, list):
                names.update(
                    b.tool_name for b in block.content if isinstance(b, ToolReferenceBlock)
                )
    return names


def server_tools_only(names: Sequence[str]) -> InvalidRequestError:
    """A request whose every tool is one of Anthropic's built-in server tools that the proxy
    does not run (it runs `web_search`): answered without them, the model's guess would pass
    for their results."""
    return InvalidRequestError(
        f"kimi-proxy cannot run {', '.join(names)}: these Anthropic built-in tools work on "
        "Anthropic's API only (kimi-proxy runs web_search itself), and this request offers no "
        "other tool."
    )


def convert_tools(
    tools: Sequence[Tool],
    messages: Sequence[Message],
    profile: ProviderProfile,
    chosen: str | None = None,
) -> list[dict[str, Any]]:
    """The function tools to offer; a deferred tool that `tool_choice` names counts as loaded."""
    loaded = referenced_tool_names(messages)
    if chosen:
        loaded.add(chosen)
    offered = offered_tools(tools, loaded)
    if len(offered) > profile.max_tools:
        log.warning(
            "offering %d of %d tools: the provider accepts at most %d",
            profile.max_tools,
            len(offered),
            profile.max_tools,
        )
        offered = offered[: profile.max_tools]
    return definitions(offered)


def definitions(tools: list[Tool]) -> list[dict[str, Any]]:
    """`openai_tool` of each: a list seen before is found whole, by one comparison in C instead
    of one lookup a tool (Claude Code sends the same dozen tools with every request)."""
    key = tuple([tool.name for tool in tools])
    whole = [(tool.description, tool.input_schema) for tool in tools]
    made = _LISTS.get(key, whole)
    if made is None:
        made = [openai_tool(tool) for tool in tools]
        _LISTS.put(key, whole, made)
    return list(made)  # the definitions are shared; the list is the payload's own


def convert_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    match choice.type:
        case "auto":
            return "auto"
        case "any":
            return "required"
        case "none":
            return "none"
        case "tool":
            if not choice.name:
                raise InvalidRequestError(
                    "tool_choice.name is required when tool_choice.type is 'tool'"
                )
            return {"type": "function", "function": {"name": upstream_tool_name(choice.name)}}
