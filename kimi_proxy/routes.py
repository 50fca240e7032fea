"""HTTP routes: glue between the wire and the pure translators."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import httpx
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from . import __version__
from .agent.loop import AgentLoop
from .agent.tools import tool_definitions
from .errors import (
    KEY_ADVICE,
    AuthenticationError,
    BadGatewayError,
    InvalidRequestError,
    OverloadedError,
    ProxyError,
    RequestTooLargeError,
    internal_error,
    render_sse,
)
from .observability import LazyJson, RequestRecord, request_record
from .protocol.anthropic import (
    CountTokensRequest,
    MessagesRequest,
    Tool,
    describe_validation_error,
)
from .sse import encode_event, encode_events
from .state import ProxyState
from .streaming import EventStreamResponse
from .tokens import estimate_tokens
from .translate.accumulate import accumulate_message
from .translate.request import (
    UpstreamRequest,
    anthropic_to_openai_request,
    convert_messages,
    convert_tools,
)
from .translate.response import openai_to_anthropic_message
from .translate.stream import StreamTranslator
from .translate.tools import upstream_tool_name
from .upstream import CallContext, UpstreamClient

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)
flow_log = logging.getLogger("kimi_proxy.flow")
MODEL_CREATED_AT = "2025-01-01T00:00:00Z"


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_json_body(request: Request, limit: int, timeout: float) -> Any:
    """The request body as JSON: at most `limit` bytes (refused before reading them all),
    arriving within `timeout` seconds (a slow sender cannot hold a worker)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"Request body is {declared} bytes; the limit is {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
                chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidRequestError("The client disconnected while sending the body.") from None
    except TimeoutError:
        raise InvalidRequestError(f"The request body took over {timeout:g} s to arrive.") from None
    body = b"".join(chunks)
    if not body:
        raise InvalidRequestError("Request body is empty; send a JSON object.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None


async def parse_body(request: Request, model: type[M]) -> M:
    settings = request.app.state.proxy.settings
    data = await read_json_body(request, settings.max_body_bytes, settings.body_timeout)
    if not isinstance(data, dict):
        raise InvalidRequestError("Request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None


async def create_message(request: Request) -> Response:
    state: ProxyState = request.app.state.proxy
    settings = state.settings
    record = request_record(request.scope)
    message_request = await parse_body(request, MessagesRequest)
    record.stream = message_request.stream
    record.model_asked = message_request.model
    if not settings.has_api_key:
        raise AuthenticationError(f"No provider API key is configured. {KEY_ADVICE}")
    if state.local_tools is not None:
        message_request = with_local_tool_definitions(message_request, state.local_tools.enabled)
    upstream_request = anthropic_to_openai_request(
        message_request,
        router=settings.router,
        profile=settings.profile,
        max_output_tokens=settings.max_output_tokens,
    )
    prompt_tokens = estimate_tokens(upstream_request.payload)
    record.model_used = upstream_request.upstream_model
    flow_log.debug("upstream request: %s", LazyJson(upstream_request.payload))
    context = CallContext(
        model=upstream_request.upstream_model,
        prompt_tokens=prompt_tokens,
        context_window=upstream_request.limits.context_window,
    )
    client = state.upstream
    if state.local_tools is not None:
        return await agent_response(
            state, message_request.stream, upstream_request, context, record
        )
    if not message_request.stream:
        completion = await client.complete(upstream_request.payload, context, record.count_retry)
        message = openai_to_anthropic_message(completion, upstream_request)
        record.tokens(message["usage"])
        return _json(message)
    release = acquire_stream_slot(state)
    translator = StreamTranslator(upstream_request, input_tokens=prompt_tokens)
    body = orjson.dumps(upstream_request.payload)
    # Nothing but the encoded body needs the parsed request any more: let it go before waiting
    # for the provider (with hundreds of streams opening at once, it is most of the memory).
    del message_request, upstream_request
    try:
        upstream_response = await client.open(body, context, record.count_retry)
    except BaseException:
        release()
        raise
    del body

    async def on_close() -> None:
        release()
        await upstream_response.aclose()

    events = stream_events(client, upstream_response, translator, record)
    return EventStreamResponse(events, ping_interval=settings.ping_interval, on_close=on_close)


def acquire_stream_slot(state: ProxyState) -> Callable[[], None]:
    """Count a stream against `KIMI_MAX_STREAMS`; beyond it answer 529 at once, never queue."""
    limit = state.settings.max_streams
    if state.active_streams >= limit:
        raise OverloadedError(
            f"The proxy is at its limit of {limit} concurrent streams; retry shortly."
        )
    state.active_streams += 1
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            state.active_streams -= 1

    return release


def with_local_tool_definitions(
    request: MessagesRequest, enabled: tuple[str, ...]
) -> MessagesRequest:
    """Offer the proxy's local tools that the client did not define itself."""
    have = {tool.name for tool in request.tools or ()}
    missing = [Tool.model_validate(t) for t in tool_definitions(enabled) if t["name"] not in have]
    if not missing:
        return request
    return request.model_copy(update={"tools": [*(request.tools or ()), *missing]})


async def agent_response(
    state: ProxyState,
    stream: bool,
    upstream_request: UpstreamRequest,
    context: CallContext,
    record: RequestRecord,
) -> Response:
    """Agent mode: the proxy runs its local tools in a loop within this one turn."""
    assert state.local_tools is not None
    settings = state.settings
    loop = AgentLoop(
        client=state.upstream,
        tools=state.local_tools,
        payload=upstream_request.payload,
        context=context,
        max_iterations=settings.max_tool_iterations,
    )
    translator = StreamTranslator(
        upstream_request,
        input_tokens=context.prompt_tokens,
        local_tools=frozenset(upstream_tool_name(n) for n in state.local_tools.enabled),
    )
    if not stream:
        async with aclosing(loop.events(translator)) as events:
            message = accumulate_message([event async for event in events])
        record.tokens(message["usage"])
        return _json(message)
    release = acquire_stream_slot(state)

    async def body() -> AsyncIterator[bytes]:
        try:
            async with aclosing(loop.events(translator)) as events:
                async for event in events:
                    if event["type"] == "content_block_delta" and record.ttft_ms is None:
                        record.first_token()
                    elif event["type"] == "message_delta":
                        record.tokens(event["usage"])
                    yield encode_event(event)
        except Exception as exc:
            yield stream_failure(exc, record)

    async def on_close() -> None:
        release()

    return EventStreamResponse(body(), ping_interval=settings.ping_interval, on_close=on_close)


async def stream_events(
    client: UpstreamClient,
    response: httpx.Response,
    translator: StreamTranslator,
    record: RequestRecord,
) -> AsyncIterator[bytes]:
    """The SSE body: translated events, pings while the provider is silent, errors as events."""
    debug = flow_log.isEnabledFor(logging.DEBUG)
    yield encode_events(translator.start())
    try:
        async with aclosing(client.chunk_batches(response)) as batches:
            async for batch in batches:
                events = []
                for chunk in batch:  # everything one network read brought: one write out,
                    events += translator.feed(chunk)
                    if events and record.ttft_ms is None:  # but the first token goes at once
                        record.first_token()
                        yield encode_events(events)
                        events = []
                if debug:
                    flow_log.debug("chunks %s -> events %s", LazyJson(batch), LazyJson(events))
                if events:
                    yield encode_events(events)
        if not translator.finished:
            raise BadGatewayError(
                "The provider closed the stream before finishing the message; try again."
            )
        closing = translator.finish()
        record.tokens(closing[-2]["usage"])
        yield encode_events(closing)
    except Exception as exc:
        yield stream_failure(exc, record)


def stream_failure(exc: Exception, record: RequestRecord) -> bytes:
    """The `error` event that ends a stream once it has started: a provider's failure as it
    is, and a bug too (its traceback logged), so the client always reads why it ended."""
    if isinstance(exc, ProxyError):
        error: ProxyError = exc
        flow_log.debug("stream error: %s", error.message)
    else:
        log.error("unexpected error in the stream of %s", record.request_id, exc_info=exc)
        error = internal_error(exc)
    record.error_type = error.error_type
    return render_sse(error)


async def count_tokens(request: Request) -> Response:
    state = request.app.state.proxy
    body = await parse_body(request, CountTokensRequest)
    tools_by_name = {t.name: t for t in body.tools or []}
    profile = state.settings.profile
    limits = profile.limits(state.settings.router.resolve(body.model))
    messages = convert_messages(body, profile, tools_by_name, limits.accepts_images)
    payload: dict[str, Any] = {"messages": messages}
    if body.tools:
        payload["tools"] = convert_tools(body.tools, body.messages, profile)
    return _json({"input_tokens": estimate_tokens(payload)})


def _model_entry(model_id: str, target: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": f"{model_id} → {target} (kimi-proxy)",
        "created_at": MODEL_CREATED_AT,
    }


async def list_models(request: Request) -> Response:
    settings = request.app.state.proxy.settings
    router = settings.router
    data = [_model_entry(alias, router.resolve(alias)) for alias in router.aliases]
    return _json(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def get_model(request: Request) -> Response:
    router = request.app.state.proxy.settings.router
    model_id = request.path_params["model_id"]
    return _json(_model_entry(model_id, router.resolve(model_id)))


async def health(request: Request) -> Response:
    state = request.app.state.proxy
    settings = state.settings
    return _json(
        {
            "status": "ok",
            "version": __version__,
            "provider": settings.profile.name,
            "upstream_url": settings.upstream_url,
            "models": {"big": settings.model, "small": settings.small_model},
            "api_key_configured": settings.has_api_key,
            "active_streams": state.active_streams,
            "time": time.time(),
        }
    )


async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    registry = request.app.state.proxy.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def hello(request: Request) -> Response:
    """Claude Code's connectivity probe (`HEAD /api/hello`)."""
    return Response(status_code=200)
