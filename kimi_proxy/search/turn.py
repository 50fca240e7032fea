"""A turn with Anthropic's `web_search` server tool: the proxy runs the searches between model
calls, inside one Anthropic message.

Each search streams as Anthropic streams it: a `server_tool_use` block (its query as one
`input_json_delta`), a `ping` while the backend answers, then the `web_search_tool_result` block
whole in its `content_block_start`. The model reads the results as its call's tool message and
goes on; the turn ends when it answers without searching, calls a client tool, or has used its
steps. Claude Code's side call (`side_query`) is searched before any model call: the model only
writes the summary, and when no provider can be reached the results' titles and snippets are the
answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import orjson

from kimi_proxy.errors import ProxyError
from kimi_proxy.providers.step import OpenStep, model_step
from kimi_proxy.translate.agent_history import LocalCall
from kimi_proxy.translate.blocks import Event
from kimi_proxy.translate.messages import calls_ran
from kimi_proxy.translate.stream import StreamTranslator
from kimi_proxy.translate.web_search import (
    SEARCH_FUNCTION,
    SearchOptions,
    error_content,
    new_server_tool_id,
    result_item,
    results_text,
)

from .backends import Query
from .client import Searcher, SearchFailure

NOT_SET_UP = (
    "Web search is not set up in kimi-proxy, so nothing was searched. To turn it on, set "
    "BRAVE_API_KEY, TAVILY_API_KEY, EXA_API_KEY or SEARXNG_URL before starting the proxy, or "
    "add a [search] table to its config file (docs/CONFIG.md)."
)
DEFAULT_MAX_USES = 8


@dataclass(slots=True)
class SearchTurn:
    open: OpenStep  # one model call through the pool
    searcher: Searcher | None  # None: no backend is configured
    payload: dict[str, Any]  # the first model call's, with the `web_search` function
    options: SearchOptions
    side_query: str | None = None  # Claude Code's side call: search this before the model
    #: A span around each search (`execute_tool web_search`), when tracing is on.
    tool_span: Callable[[str], AbstractContextManager[Any]] | None = None

    async def events(self, translator: StreamTranslator) -> AsyncGenerator[Event, None]:
        """Every event of the turn; raises `ProxyError` on failure (after what was sent)."""
        for event in translator.start():
            yield event
        messages = list(self.payload["messages"])
        payload = self.payload
        max_uses = self.options.max_uses or DEFAULT_MAX_USES
        pending: list[LocalCall] = []
        if self.side_query is not None:
            if self.searcher is None:
                for event in translator.note(NOT_SET_UP):
                    yield event
                for event in translator.finish():
                    yield event
                return
            arguments = orjson.dumps({"query": self.side_query}).decode()
            pending = [LocalCall(new_server_tool_id(), SEARCH_FUNCTION, arguments)]
        text = ""
        for _ in range(max_uses + 2):  # each step searches at least once, or ends the turn
            client_calls = False
            if not pending:
                answered = False
                try:
                    async for event in model_step(self.open, payload, messages, translator):
                        answered = True
                        yield event
                except ProxyError:
                    if self.side_query is None or answered:
                        raise
                    # The summary's model is out of reach: the results are the answer.
                    for event in translator.note(_last_results(messages)):
                        yield event
                    break
                result = translator.end_step()
                for event in result.events:
                    yield event
                pending, text, client_calls = result.local_calls, result.text, result.client_calls
                if not pending:
                    break
            done: list[LocalCall] = []
            for call in pending:
                async for item in self._search(call, translator, max_uses):
                    if isinstance(item, LocalCall):
                        done.append(item)
                    else:
                        yield item
            messages += calls_ran(text, done)
            if client_calls:
                break  # the client runs its own calls; the model continues next turn
            pending, text = [], ""
            if "tool_choice" in payload:  # a choice that forced the search is spent
                payload = {k: v for k, v in payload.items() if k != "tool_choice"}
        for event in translator.finish():
            yield event

    async def _search(
        self, call: LocalCall, translator: StreamTranslator, max_uses: int
    ) -> AsyncIterator[Event | LocalCall]:
        """One search, as Anthropic streams it; ends with the call and what the model reads."""
        query = _query_of(call.arguments)
        block_id = new_server_tool_id()
        start = {"type": "server_tool_use", "id": block_id, "name": SEARCH_FUNCTION, "input": {}}
        for event in translator.whole_block(start, orjson.dumps({"query": query}).decode()):
            yield event
        if self.searcher is None:
            for event in translator.note(NOT_SET_UP):
                yield event
            yield LocalCall(call.id, call.name, call.arguments, NOT_SET_UP, False)
            return
        yield {"type": "ping"}
        content: list[dict[str, Any]] | dict[str, Any]
        if translator.web_searches >= max_uses:
            content = error_content("max_uses_exceeded")
        else:
            options = self.options
            asked = Query(
                text=query,
                max_results=self.searcher.settings.max_results,
                allowed_domains=options.allowed_domains,
                blocked_domains=options.blocked_domains,
                country=options.country,
            )
            with self.tool_span("web_search") if self.tool_span else nullcontext():
                found = await self.searcher.search(asked)
            if isinstance(found, SearchFailure):
                content = error_content(found.code)
            else:
                translator.web_searches += 1
                content = [result_item(r.url, r.title, r.snippet, r.page_age) for r in found]
        block = {"type": "web_search_tool_result", "tool_use_id": block_id, "content": content}
        for event in translator.whole_block(block):
            yield event
        yield LocalCall(call.id, call.name, call.arguments, results_text(query, content), False)


def _query_of(arguments: str) -> str:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return ""
    query = value.get("query") if isinstance(value, dict) else None
    return query.strip() if isinstance(query, str) else ""


def _last_results(messages: list[dict[str, Any]]) -> str:
    """The last search's results as the model would have read them."""
    return str(messages[-1].get("content") or "")
