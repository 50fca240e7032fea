"""Sends a query to the configured backend through the proxy's own HTTP client (the providers'
connection pool, so a company proxy in `HTTPS_PROXY` is used here too). Every failure becomes
the error code Anthropic's web search gives in its result block, and one log line that names the
backend and its key by name, never the key."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
import orjson

from kimi_proxy.config.search import SearchSettings

from .backends import BadAnswer, Query, SearchResult, http_call, keep_domains, read_results

log = logging.getLogger("kimi_proxy.search")

MAX_QUERY_CHARS = 400  # Brave's limit, the strictest of the four
MAX_ANSWER_BYTES = 4 * 2**20


@dataclass(frozen=True, slots=True)
class SearchFailure:
    """`web_search_tool_result_error.error_code`: unavailable | too_many_requests |
    query_too_long | invalid_input | max_uses_exceeded."""

    code: str


class Searcher:
    """One backend, one client; `search` never raises for what the backend does. The transport
    is the app's, which closes it."""

    def __init__(self, settings: SearchSettings, transport: httpx.AsyncBaseTransport) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            transport=transport, timeout=settings.timeout_s, follow_redirects=False
        )

    async def search(self, query: Query) -> list[SearchResult] | SearchFailure:
        if not query.text.strip():
            return SearchFailure("invalid_input")
        if len(query.text) > MAX_QUERY_CHARS:
            return SearchFailure("query_too_long")
        settings = self.settings
        call = http_call(settings, query)
        try:
            async with self._client.stream(
                call.method, call.url, headers=call.headers, params=call.params, json=call.json
            ) as response:
                body = await _read_at_most(response, MAX_ANSWER_BYTES + 1)
        except httpx.TimeoutException:
            return self._failed("unavailable", f"no answer within {settings.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return self._failed("unavailable", f"{type(exc).__name__}")
        if response.status_code == 429:
            return self._failed("too_many_requests", "429 (the backend's rate limit)")
        if response.status_code in (401, 403):
            return self._failed(
                "unavailable", f"{response.status_code}: the key {settings.key_name} is refused"
            )
        if response.status_code != 200 or len(body) > MAX_ANSWER_BYTES:
            return self._failed("unavailable", f"HTTP {response.status_code}")
        try:
            results = read_results(settings.backend, orjson.loads(body))
        except (orjson.JSONDecodeError, BadAnswer) as exc:
            return self._failed("unavailable", f"an answer that is not its JSON ({exc})")
        kept = keep_domains(results, query.allowed_domains, query.blocked_domains)
        return kept[: query.max_results]

    def _failed(self, code: str, why: str) -> SearchFailure:
        settings = self.settings
        log.warning("web search via %s (%s) failed: %s", settings.backend, settings.url, why)
        return SearchFailure(code)


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """The answer's body, but never more than `limit` bytes of it held (a backend that answers
    without end is cut off, not buffered)."""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        parts.append(part)
        size += len(part)
        if size >= limit:
            break
    return b"".join(parts)[:limit]
