"""Scripted web search backends for the tests: one server that speaks the four APIs the proxy
uses (SearXNG, Brave, Tavily, Exa) with each one's real request and JSON shapes, records what it
was asked, and can be made slow, down or refusing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support.upstream import serve_in_thread

PAGES = [
    (
        "https://docs.example.com/kimi-k2",
        "Kimi K2 documentation",
        "Kimi K2 is a model by Moonshot.",
    ),
    ("https://blog.example.org/k2-release", "K2 release notes", "Released with a 256k context."),
    ("https://news.example.net/moonshot", "Moonshot news", "Moonshot AI announced the model."),
]
KEY = "test-search-key-1234"


@dataclass
class Asked:
    backend: str
    query: str
    headers: dict[str, str]
    params: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class SearchBackends:
    base_url: str = ""
    asked: list[Asked] = field(default_factory=list)
    status: int = 200  # answer this status instead of results
    delay: float = 0.0  # seconds before answering
    pages: list[tuple[str, str, str]] = field(default_factory=lambda: list(PAGES))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/searxng/search", self._searxng, methods=["GET"]),
                Route("/brave/res/v1/web/search", self._brave, methods=["GET"]),
                Route("/tavily/search", self._tavily, methods=["POST"]),
                Route("/exa/search", self._exa, methods=["POST"]),
            ]
        )

    def url(self, backend: str) -> str:
        return f"{self.base_url}/{backend}"

    async def _answer(
        self, request: Request, backend: str, key_ok: bool, query: str, body: Any
    ) -> Response | None:
        self.asked.append(
            Asked(backend, query, dict(request.headers), dict(request.query_params), body)
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if not key_ok:
            return JSONResponse({"error": "invalid api key"}, status_code=401)
        if self.status != 200:
            return JSONResponse({"error": "scripted"}, status_code=self.status)
        return None

    async def _searxng(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        refused = await self._answer(request, "searxng", True, query, None)
        if refused is not None:
            return refused
        results = [
            {"url": u, "title": t, "content": c, "engine": "duckduckgo", "publishedDate": None}
            for u, t, c in self.pages
        ]
        return JSONResponse({"query": query, "number_of_results": len(results), "results": results})

    async def _brave(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        key_ok = request.headers.get("x-subscription-token") == KEY
        refused = await self._answer(request, "brave", key_ok, query, None)
        if refused is not None:
            return refused
        results = [
            {"title": t, "url": u, "description": c, "age": "2 days ago", "type": "search_result"}
            for u, t, c in self.pages
        ]
        return JSONResponse(
            {
                "type": "search",
                "query": {"original": query},
                "web": {"type": "search", "results": results},
            }
        )

    async def _tavily(self, request: Request) -> Response:
        body = json.loads(await request.body())
        key_ok = request.headers.get("authorization") == f"Bearer {KEY}"
        refused = await self._answer(request, "tavily", key_ok, body.get("query", ""), body)
        if refused is not None:
            return refused
        results = [
            {"title": t, "url": u, "content": c, "score": 0.9, "raw_content": None}
            for u, t, c in self.pages
        ]
        return JSONResponse({"query": body.get("query"), "results": results, "response_time": 0.5})

    async def _exa(self, request: Request) -> Response:
        body = json.loads(await request.body())
        key_ok = request.headers.get("x-api-key") == KEY
        refused = await self._answer(request, "exa", key_ok, body.get("query", ""), body)
        if refused is not None:
            return refused
        results = [
            {
                "id": u,
                "title": t,
                "url": u,
                "publishedDate": "2026-11-30T00:00:00.000Z",
                "author": None,
                "text": c,
            }
            for u, t, c in self.pages
        ]
        return JSONResponse({"requestId": "r1", "results": results})


@contextmanager
def search_backends() -> Iterator[SearchBackends]:
    backends = SearchBackends()
    with serve_in_thread(backends.app()) as url:
        backends.base_url = url
        yield backends
