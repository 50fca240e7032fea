"""Anthropic's `web_search` server tool, served by the proxy: what a request asks of it, the
blocks that carry a search (`server_tool_use`, `web_search_tool_result`), and those blocks as
the provider's tool call and tool message. Pure: no I/O (`search/` runs the searches).

The model is offered a `web_search(query)` function in the server tool's place; the proxy runs
its calls. `encrypted_content` is not encrypted here: it is the snippet, base64url-encoded JSON,
so a later request that sends the blocks back gives the model the same text again.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from kimi_proxy.protocol.anthropic import (
    MessagesRequest,
    Tool,
    ToolChoice,
)

SEARCH_FUNCTION = "web_search"
_SIDE_CALL_QUERY = re.compile(r"Perform a web search for the query:\s*(.+)", re.DOTALL)
SEARCH_FUNCTION_TOOL = Tool(
    name=SEARCH_FUNCTION,
    description=(
        "Search the web. Returns the pages found (title, URL, age, an excerpt). Use it for "
        "anything recent or that you are not sure of; cite the URLs you rely on."
    ),
    input_schema={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "The search query"}},
        "required": ["query"],
    },
)


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """What the request's `web_search_…` tool allows."""

    name: str
    max_uses: int | None = None
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    country: str | None = None


def is_web_search(tool: Tool) -> bool:
    return bool(tool.type) and str(tool.type).startswith("web_search_")


def search_options(tools: Sequence[Tool] | None) -> SearchOptions | None:
    """The first `web_search_…` tool's options, or None when the request offers none."""
    for tool in tools or ():
        if is_web_search(tool):
            extra = tool.model_extra or {}
            location = extra.get("user_location") or {}
            max_uses = extra.get("max_uses")
            return SearchOptions(
                name=tool.name,
                max_uses=max_uses if isinstance(max_uses, int) and max_uses > 0 else None,
                allowed_domains=tuple(str(d) for d in extra.get("allowed_domains") or ()),
                blocked_domains=tuple(str(d) for d in extra.get("blocked_domains") or ()),
                country=location.get("country") if isinstance(location, dict) else None,
            )
    return None


def side_call_query(request: MessagesRequest, options: SearchOptions) -> str | None:
    """Claude Code's WebSearch side call needs no model to pick the query: it offers the
    search tool alone, and its last user message says "Perform a web search for the query: …"
    (or its choice forces the tool, and the whole message is the query)."""
    tools = request.tools or ()
    if not all(is_web_search(t) for t in tools):
        return None
    choice = request.tool_choice
    forced = choice is not None and (
        choice.type == "any" or (choice.type == "tool" and choice.name == options.name)
    )
    content = request.messages[-1].content
    if isinstance(content, str):
        text = content
    else:
        text = "\n".join(getattr(block, "text", "") or "" for block in content)
    found = _SIDE_CALL_QUERY.search(text)
    if found is None and not forced:
        return None
    query = (found.group(1) if found else text).strip()
    return query or None


def with_search_function(request: MessagesRequest, options: SearchOptions) -> MessagesRequest:
    """The request with the `web_search(query)` function in the server tool's place; a choice
    that forced the server tool forces the function."""
    tools = [t for t in request.tools or () if not is_web_search(t)]
    update: dict[str, Any] = {"tools": [*tools, SEARCH_FUNCTION_TOOL]}
    choice = request.tool_choice
    if choice is not None and choice.type == "tool" and choice.name == options.name:
        update["tool_choice"] = ToolChoice(type="tool", name=SEARCH_FUNCTION)
    return request.model_copy(update=update)


def new_server_tool_id() -> str:
    return "srvtoolu_" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")


def result_item(url: str, title: str, snippet: str, page_age: str | None) -> dict[str, Any]:
    """One `web_search_result`, as Anthropic's API sends it."""
    sealed = base64.urlsafe_b64encode(orjson.dumps({"s": snippet})).decode()
    return {
        "type": "web_search_result",
        "url": url,
        "title": title,
        "encrypted_content": sealed,
        "page_age": page_age,
    }


def error_content(code: str) -> dict[str, Any]:
    return {"type": "web_search_tool_result_error", "error_code": code}


def snippet_of(item: dict[str, Any]) -> str:
    """The snippet a `result_item` carries (empty for Anthropic's own, truly encrypted ones)."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(str(item.get("encrypted_content") or "")))
    except (binascii.Error, ValueError):
        return ""
    return str(value.get("s") or "") if isinstance(value, dict) else ""


def results_text(query: str, content: list[dict[str, Any]] | dict[str, Any]) -> str:
    """What the model reads as the search's tool message: each result, or the error."""
    if isinstance(content, dict):
        code = content.get("error_code", "unavailable")
        return f"The web search for {query!r} failed: {code}."
    if not content:
        return f"The web search for {query!r} found nothing."
    lines = [f"Results of the web search for {query!r}:"]
    for number, item in enumerate(content, 1):
        age = f" ({item['page_age']})" if item.get("page_age") else ""
        lines.append(f"\n[{number}] {item.get('title', '')}{age}\n{item.get('url', '')}")
        snippet = snippet_of(item)
        if snippet:
            lines.append(snippet)
    return "\n".join(lines)
