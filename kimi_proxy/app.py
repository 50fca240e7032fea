"""The ASGI application: `create_app(settings, transport=None)`.

The lifespan owns the one shared provider transport (the connection pool) unless a test injects
its own. Errors of every kind leave as Anthropic-shaped JSON.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import routes
from .agent.sandbox import Sandbox
from .agent.tools import LocalTools, parse_tool_names
from .config import Settings, load_settings
from .errors import (
    InvalidRequestError,
    NotFoundError,
    ProxyError,
    internal_error,
    render_json,
)
from .observability import (
    DEFAULT_DEBUG_LOG,
    Metrics,
    ObservabilityMiddleware,
    request_record,
    setup_logging,
)
from .security import SecurityMiddleware
from .state import ProxyState
from .transport import HttptoolsTransport
from .upstream import UpstreamClient


def upstream_timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,
    )


def new_transport(settings: Settings) -> HttptoolsTransport:
    """The shared provider connection pool (`transport.py`: asyncio and httptools, measured to
    take a third less time than aiohttp under httpx to the provider's headers)."""
    return HttptoolsTransport(max_connections=settings.max_streams + 16)


def new_upstream(settings: Settings, transport: httpx.AsyncBaseTransport) -> UpstreamClient:
    return UpstreamClient(
        transport,
        url=settings.chat_completions_url,
        api_key=settings.api_key_value,
        timeout=upstream_timeout(settings),
        max_retries=settings.max_retries,
        retry_budget=settings.retry_budget,
    )


def error_response(error: ProxyError) -> Response:
    headers = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(int(error.retry_after + 0.999))
    return Response(
        render_json(error), status_code=error.status, media_type="application/json", headers=headers
    )


def _note_error(request: Request, error: ProxyError) -> None:
    request_record(request.scope).error_type = error.error_type


async def _proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProxyError)
    _note_error(request, exc)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFoundError(f"No route for {request.method} {request.url.path}"))
    if exc.status_code == 405:
        error = InvalidRequestError(f"Method {request.method} is not allowed on {request.url.path}")
        response = error_response(error)
        response.status_code = 405
        return response
    return error_response(InvalidRequestError(str(exc.detail)))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    """Starlette's answer to an unexpected error; it then re-raises the error, which
    ObservabilityMiddleware logs (once) and keeps from the server."""
    error = internal_error(exc)
    _note_error(request, error)
    return error_response(error)


def configure_logging(settings: Settings) -> None:
    """Console logging, and the redacted debug log with `--debug` / `KIMI_LOG_FILE`."""
    secrets = [s for s in (settings.api_key_value, settings.auth_token_value) if s]
    log_file = settings.log_file or (DEFAULT_DEBUG_LOG if settings.debug else None)
    setup_logging(settings.log_level, log_file, secrets)


def tune_garbage_collector() -> None:
    """For a serving process, once its app is built: what exists now lives for the process.

    Measured (bench/, 64 streams): full collections walked the ~70,000 objects of the imported
    libraries and pydantic schemas again and again, ~40 ms each and over a tenth of the CPU.
    Frozen, they are out of every collection: ~13 ms each, two thirds less time in all.
    A request allocates thousands of short-lived objects (the parsed 50 KB body), so the young
    generation collects every 5,000 allocations instead of 700: half the collector's time
    (−6% CPU at 64 streams), and in the 1,000-stream run the longest pause fell from 41 to
    12 ms. The older generations keep a factor of 10: at 50 (10,000 × 50 × 50) a pause reached
    170 ms. Cyclic garbage is still collected (a request leaves a few dozen objects in cycles).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 10, 10)


def app_from_env() -> ASGIApp:
    """The app of one worker process (`kimi-proxy serve --workers N`)."""
    settings = load_settings()
    configure_logging(settings)
    app = create_app(settings)
    tune_garbage_collector()
    return app


def create_app(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> ASGIApp:
    owns_transport = transport is None
    pool = transport or new_transport(settings)
    local_names = parse_tool_names(settings.local_tools)
    state = ProxyState(
        settings=settings,
        upstream=new_upstream(settings, pool),
        local_tools=LocalTools(Sandbox(settings.working_dir), local_names) if local_names else None,
        metrics=Metrics(),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owns_transport:
                await pool.aclose()

    metrics = state.metrics
    metrics.active_streams.set_function(lambda: state.active_streams)

    def secured(app: ASGIApp) -> SecurityMiddleware:
        return SecurityMiddleware(
            app,
            allowed_hosts=settings.allowed_host_list,
            cors_origins=settings.cors_origin_list,
            auth_token=settings.auth_token_value,
        )

    middleware = []
    if settings.cors_origin_list:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origin_list,
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["request-id"],
                max_age=600,
            )
        )
    middleware.append(Middleware(secured))
    app = Starlette(
        middleware=middleware,
        routes=[
            Route("/v1/messages", routes.create_message, methods=["POST"]),
            Route("/v1/messages/count_tokens", routes.count_tokens, methods=["POST"]),
            Route("/v1/models", routes.list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", routes.get_model, methods=["GET"]),
            Route("/health", routes.health, methods=["GET"]),
            Route("/api/hello", routes.hello, methods=["GET", "HEAD"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
        ],
        exception_handlers={
            ProxyError: _proxy_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.proxy = state
    if settings.cors_origin_list:  # browsers' preflights and CORS headers: all through Starlette
        return ObservabilityMiddleware(app, metrics=metrics)
    # Outermost, so that even Starlette's last-resort 500 carries a request id and is counted.
    return ObservabilityMiddleware(MessagesFastPath(app, secured(_messages)), metrics=metrics)


MESSAGES = ("/v1/messages", "POST")


class MessagesFastPath:
    """`POST /v1/messages` goes to its handler past Starlette's router and exception layers,
    with the same security checks and error responses; everything else goes to Starlette.

    Measured (bench/): Starlette's layers wrapped every `send` of a stream three more times and
    matched the route on every request: 3% of the CPU at 64 streams.
    """

    def __init__(self, app: Starlette, messages: ASGIApp) -> None:
        self.app = app
        self.messages = messages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"], scope["method"]) == MESSAGES:
            scope["app"] = self.app  # what `request.app` gives the handler
            await self.messages(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _messages(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    try:
        response = await routes.create_message(request)
    except ProxyError as exc:
        response = await _proxy_error(request, exc)
    await response(scope, receive, send)  # anything else: ObservabilityMiddleware answers it
