"""The ASGI application: `create_app(settings, transport=None)`.

The lifespan owns the one shared provider transport (the connection pool) unless a test injects
its own. Errors of every kind leave as Anthropic-shaped JSON.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kimi_proxy.agent.sandbox import Sandbox
from kimi_proxy.agent.tools import LocalTools
from kimi_proxy.config.gateway import Gateway
from kimi_proxy.config.pool_file import (
    load_documents,
    load_gateway,
    load_pool_spec,
    load_search,
)
from kimi_proxy.config.search import SearchSettings
from kimi_proxy.config.settings import (
    Settings,
    calibration_path,
    load_settings,
    parse_tool_names,
    state_dir,
)
from kimi_proxy.errors import (
    InvalidRequestError,
    NotFoundError,
    ProxyError,
    internal_error,
    render_json,
)
from kimi_proxy.gateway.runtime import GatewayRuntime
from kimi_proxy.gateway.shared_view import SharedView
from kimi_proxy.providers.discovery import served_models, unserved
from kimi_proxy.providers.pool import Pool
from kimi_proxy.providers.recheck import keep_rechecking
from kimi_proxy.providers.spec import KeySpec, PoolSpec, ProviderSpec
from kimi_proxy.search.client import Searcher
from kimi_proxy.upstream.client import UpstreamClient
from kimi_proxy.upstream.transport import HttptoolsTransport
from kimi_proxy.web.feed import row
from kimi_proxy.web.routes import dashboard_routes, status_routes

from . import about, routes
from .admin import admin_routes
from .bodies import BodiesInFlight
from .calibrations import keeping
from .collectors import GatewayCollector, report_pool_to
from .gc_pauses import timing_collections
from .observability import (
    Metrics,
    ObservabilityMiddleware,
    Watcher,
    request_record,
    setup_logging,
)
from .security import OPEN_PATHS, SecurityMiddleware
from .state import ProxyState
from .tracing import tracing_from_env

log = logging.getLogger("kimi_proxy")


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


def new_client_factory(
    settings: Settings, transport: httpx.AsyncBaseTransport
) -> Callable[[ProviderSpec, KeySpec], UpstreamClient]:
    """How the pool gets a client per key: all of them share one connection pool."""
    timeout = upstream_timeout(settings)

    def new_client(provider: ProviderSpec, key: KeySpec) -> UpstreamClient:
        url = provider.base_url.rstrip("/") + "/chat/completions"
        return UpstreamClient(
            transport,
            url=url,
            api_key=key.secret,
            timeout=timeout,
            url_setting=provider.url_setting,
        )

    return new_client


def new_pool(settings: Settings, spec: PoolSpec, transport: httpx.AsyncBaseTransport) -> Pool:
    return Pool(
        spec,
        new_client_factory(settings, transport),
        max_retries=settings.max_retries,
        retry_budget=settings.retry_budget,
        ping_interval=settings.ping_interval,
    )


async def check_served_models(
    pool: Pool, transport: httpx.AsyncBaseTransport, timeout: float
) -> None:
    """Retire the candidates a provider's live model list lacks (not in legacy mode, where
    the one model was named explicitly)."""
    if pool.spec.legacy_router is not None:
        return
    candidates = [c for family in pool.spec.families.values() for c in family]
    for name, keys in pool.keys.items():
        if not keys or not any(c.provider == name for c in candidates):
            continue
        provider = pool.spec.providers[name]
        try:
            served = await served_models(transport, provider, keys[0].key, timeout)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("could not list %s's models (%s): its candidates stay", name, exc)
            continue
        for candidate, why in unserved(dict.fromkeys(candidates), name, served):
            pool.retire(candidate, why)


def error_response(error: ProxyError) -> Response:
    return Response(
        render_json(error),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers(),
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


def configure_logging(
    settings: Settings, spec: PoolSpec | None = None, gateway: Gateway | None = None
) -> None:
    """Console logging, and the redacted debug log with `--debug` / `KIMI_LOG_FILE`."""
    keys = [k.secret for p in spec.providers.values() for k in p.keys] if spec else []
    if gateway is not None and gateway.redis_url:
        keys.append(gateway.redis_url)  # it may carry a password
    if settings.user_key is not None:
        keys.append(settings.user_key.get_secret_value())
    secrets = [s for s in (settings.api_key_value, settings.auth_token_value, *keys) if s]
    log_file = settings.log_file or (state_dir() / "debug.log" if settings.debug else None)
    setup_logging(settings.log_level, log_file, secrets, settings.log_prompts)


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
    spec = load_pool_spec(settings, os.environ, date.today())
    gateway = load_gateway(settings, os.environ)
    configure_logging(settings, spec, gateway)
    app = create_app(settings, spec=spec, gateway=gateway)
    tune_garbage_collector()
    return app


def proxy_state(app: ASGIApp) -> ProxyState:
    """The state behind an app `create_app` made (through its middleware)."""
    inner: Any = app
    while not hasattr(inner, "state"):
        inner = inner.app
    state: ProxyState = inner.state.proxy
    return state


def create_app(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    spec: PoolSpec | None = None,
    gateway: Gateway | None = None,
    search: SearchSettings | None = None,
) -> ASGIApp:
    """The app; `spec`, `gateway` and `search` default to what the settings and environment
    describe."""
    owns_transport = transport is None
    connections = transport or new_transport(settings)
    if spec is None:
        spec = load_pool_spec(settings, os.environ, date.today())
    for note in spec.notes:
        log.warning("%s", note)
    if gateway is None:
        gateway = load_gateway(settings, os.environ)
    local_names = parse_tool_names(settings.local_tools)
    state = ProxyState(
        gateway=GatewayRuntime.build(gateway, settings.users_file),
        settings=settings,
        pool=new_pool(settings, spec, connections),
        local_tools=LocalTools(Sandbox(settings.working_dir), local_names) if local_names else None,
        metrics=Metrics(),
        bodies=BodiesInFlight(settings.max_bodies_bytes),
        page_images=load_documents(settings).page_images,
    )
    state.pool.let_go = state.free_later
    state.tracing = tracing_from_env(os.environ)
    search = search or load_search(settings, os.environ)
    if search is not None:
        state.searcher = Searcher(search, connections)
    state.gateway.share_keys(state.pool)
    state.gateway.limiter.patience = spec.routes.max_wait_s

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        check = asyncio.create_task(
            check_served_models(state.pool, connections, settings.connect_timeout)
        )
        rechecking = asyncio.create_task(
            keep_rechecking(state.pool, connections, settings.connect_timeout)
        )
        try:
            with timing_collections(state.metrics.gc_pauses):
                async with state.gateway.running():
                    saving = asyncio.create_task(
                        keeping(state.pool, state.gateway.link, calibration_path(settings))
                    )
                    try:
                        yield
                    finally:  # saved while the gateway's Redis link is still open
                        saving.cancel()
                        await asyncio.gather(saving, return_exceptions=True)
        finally:
            check.cancel()
            rechecking.cancel()
            state.pdf_reader.shutdown(wait=False)
            state.large_bodies.shutdown(wait=False)
            if state.tracing is not None:  # what is left goes out (the SDK's own thread)
                await asyncio.to_thread(state.tracing.shutdown)
            if owns_transport:
                await connections.aclose()

    metrics = state.metrics
    metrics.active_streams.set_function(lambda: state.active_streams)
    report_pool_to(metrics, state.pool)
    if state.gateway.link is not None:
        metrics.registry.register(GatewayCollector(state.gateway.link))

    def secured(app: ASGIApp) -> SecurityMiddleware:
        return SecurityMiddleware(
            app,
            allowed_hosts=settings.allowed_host_list,
            cors_origins=settings.cors_origin_list,
            auth_token=settings.auth_token_value,
            users=state.gateway.users,
            open_paths=OPEN_PATHS | ({"/metrics"} if settings.metrics_public else set()),
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
            Route("/v1/models", about.list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", about.get_model, methods=["GET"]),
            Route("/health", about.health, methods=["GET"]),
            Route("/ready", about.ready, methods=["GET"]),
            Route("/api/hello", about.hello, methods=["GET", "HEAD"]),
            Route("/metrics", about.metrics, methods=["GET"]),
            *admin_routes(),
            *status_routes(),
            *(dashboard_routes() if settings.dashboard_enabled else ()),
        ],
        exception_handlers={
            ProxyError: _proxy_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.proxy = state
    metrics.route_templates(route.path for route in app.routes if isinstance(route, Route))
    runtime = state.gateway
    if runtime.link is not None and runtime.settings is not None:  # one view behind a balancer
        runtime.view = SharedView(runtime.link.client, runtime.settings.prefix, row)
    watchers: tuple[Watcher, ...] = tuple(
        w for w in (state.feed, runtime.meter, runtime.view) if w is not None
    )
    if settings.cors_origin_list:  # browsers' preflights and CORS headers: all through Starlette
        return ObservabilityMiddleware(
            app,
            metrics=metrics,
            watchers=watchers,
            trace_steps=settings.trace_steps,
            tracing=state.tracing,
        )
    # Outermost, so that even Starlette's last-resort 500 carries a request id and is counted.
    return ObservabilityMiddleware(
        MessagesFastPath(app, secured(_messages)),
        metrics=metrics,
        watchers=watchers,
        trace_steps=settings.trace_steps,
        tracing=state.tracing,
    )


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
