"""The dashboard's routes: the page and its files, its live feed (SSE), and the per-session
status the Claude Code status line asks for.

The page is plain HTML, CSS and JS with uPlot (vendored, MIT) for the charts: no build step,
no CDN. With a proxy token, `/dashboard?token=…` sets an HttpOnly cookie scoped to the
dashboard and redirects to the page, so the token leaves the address bar and the feed
(`EventSource`, which cannot send headers) carries the cookie.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import cache
from importlib.resources import files
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from kimi_proxy.errors import NotFoundError
from kimi_proxy.providers.pool import Pool

from .feed import Feed, SharedReader

COOKIE = "kimi_dashboard"
TICK_SECONDS = 1.0  # how often a watching page gets the state of keys, streams and charts
RETRY = b"retry: 500\n\n"  # a page reconnects this soon (ms) after the proxy restarts
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot-LICENSE.txt": "text/plain; charset=utf-8",
}


@cache
def static_file(name: str) -> bytes:
    return files("kimi_proxy.web").joinpath("static", name).read_bytes()


def keys_state(pool: Pool, now: float) -> list[dict[str, Any]]:
    """Each key's budget as the pool knows it: what is left of each limit, when it resets."""
    rows = []
    for key in pool.all_keys():
        windows = []
        for budget in key.ledger.windows.values():
            left = budget.available(now)
            windows.append(
                {
                    "kind": budget.kind,
                    "window": budget.window,
                    "limit": budget.limit,
                    "left": None if left is None else max(0, left),
                    "resets_in": round(max(0.0, budget.resets_at - now), 1),
                    "reported": budget.reported,
                }
            )
        cooldown = key.ledger.cooldown_until - now
        rows.append(
            {
                "provider": key.provider.name,
                "key": key.key.name,
                "disabled": key.disabled,
                "recheck_in_s": (
                    round(max(0.0, key.recheck_at - now), 1) if key.recheck_at is not None else None
                ),
                "cooldown_s": round(cooldown, 1) if cooldown > 0 else None,
                "cooldown_reason": key.ledger.cooldown_reason if cooldown > 0 else None,
                "windows": windows,
            }
        )
    return rows


def state(
    pool: Pool,
    feed: Feed,
    *,
    recent: list[dict[str, Any]] | None = None,
    full: bool,
    budgets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The dashboard's picture; `recent`: the last requests of every instance (shared view);
    `budgets`: each dollars budget and what is spent of it."""
    now = pool.clock()
    body: dict[str, Any] = {
        "now": time.time(),
        "keys": keys_state(pool, now),
        "retired": dict(pool.retired),
        "running": feed.running(),
        "chart": feed.chart(),
        "today": feed.today(),
        "budgets": budgets or [],
    }
    if full:
        body["recent"] = feed.finished_rows() if recent is None else recent
    return body


def sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


#: The dashboard is never framed by another page (clickjacking) nor sniffed as another type.
PAGE_HEADERS = {
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _behind_tls(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


async def page(request: Request) -> Response:
    token = request.query_params.get("token")
    if token:  # the security middleware has checked it: keep it in a cookie, not the URL
        response = RedirectResponse("/dashboard", status_code=303, headers=PAGE_HEADERS)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            path="/dashboard",
            secure=_behind_tls(request),  # never sent back in clear once it came over TLS
        )
        return response
    return Response(
        static_file("dashboard.html"), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        raise NotFoundError(f"No dashboard file {name!r}.")
    headers = {"cache-control": "no-cache", **PAGE_HEADERS}
    return Response(static_file(name), media_type=STATIC[name], headers=headers)


async def events(request: Request) -> Response:
    proxy = request.app.state.proxy
    pool: Pool = proxy.pool
    feed: Feed = proxy.feed
    view: SharedReader | None = proxy.view

    async def stream() -> AsyncIterator[bytes]:
        queue = feed.watch()
        try:
            yield RETRY
            shared = await view.recent() if view is not None else None
            budgets = await proxy.gateway.budgets()
            yield sse("snapshot", state(pool, feed, recent=shared, full=True, budgets=budgets))
            deadline = time.monotonic() + TICK_SECONDS
            while True:
                try:
                    timeout = max(0.0, deadline - time.monotonic())
                    event = await asyncio.wait_for(queue.get(), timeout)
                    yield sse(event["type"], event)
                except TimeoutError:
                    budgets = await proxy.gateway.budgets()
                    yield sse("state", state(pool, feed, full=False, budgets=budgets))
                    deadline = time.monotonic() + TICK_SECONDS
        finally:
            feed.unwatch(queue)

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


async def session_status(request: Request) -> Response:
    """What the status line shows for one Claude Code session."""
    proxy = request.app.state.proxy
    pool: Pool = proxy.pool
    feed: Feed = proxy.feed
    session_id = request.path_params["session_id"]
    view: SharedReader | None = proxy.view
    totals = await view.session(session_id) if view is not None else None
    if totals is None:  # without Redis, or Redis silent: what this instance served
        totals = feed.session(session_id)
    asker = request.scope.get("state", {}).get("user")
    if totals is not None and asker is not None and totals.user != asker.name:
        totals = None  # a gateway user sees their own sessions only
    body: dict[str, Any] = {"session": session_id, "known": totals is not None}
    if totals is not None:
        now = pool.clock()
        tpm = next(
            (
                w
                for k in keys_state(pool, now)
                if k["provider"] == totals.provider and k["key"] == totals.key
                for w in k["windows"]
                if w["kind"] == "tokens" and w["window"] == "minute"
            ),
            None,
        )
        body.update(
            provider=totals.provider,
            model=totals.model,
            key=totals.key,
            context_tokens=totals.context_tokens,
            context_window=totals.context_window,
            requests=totals.requests,
            cost_usd=round(totals.cost_usd, 6),
            tpm=tpm,
        )
    return Response(orjson.dumps(body), media_type="application/json")


def dashboard_routes() -> list[Route]:
    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/events", events, methods=["GET"]),
        Route("/dashboard/static/{name}", asset, methods=["GET"]),
    ]


def status_routes() -> list[Route]:
    return [Route("/status/session/{session_id}", session_status, methods=["GET"])]
