"""HTTP routes: glue between the wire and the pure translators (a stream's body: relay.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any, TypeVar

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from kimi_proxy import __version__
from kimi_proxy.agent.loop import AgentLoop
from kimi_proxy.agent.tools import tool_definitions
from kimi_proxy.errors import (
    DrainingError,
    InvalidRequestError,
    OverloadedError,
    ProxyError,
    RequestTooLargeError,
    SharedStoreDownError,
)
from kimi_proxy.protocol.anthropic import (
    CountTokensRequest,
    MessagesRequest,
    Tool,
    describe_validation_error,
)
from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.protocol.sse import encode_event
from kimi_proxy.providers.call import Call, MustWait, Opened
from kimi_proxy.providers.models import DEFAULT_ALIASES
from kimi_proxy.providers.pool import Pool
from kimi_proxy.providers.routing import no_candidate_error, unservable
from kimi_proxy.translate.accumulate import accumulate_message
from kimi_proxy.translate.messages import convert_messages
from kimi_proxy.translate.response import openai_to_anthropic_message
from kimi_proxy.translate.stream import StreamTranslator
from kimi_proxy.translate.tokens import estimate_tokens
from kimi_proxy.translate.tools import convert_tools, upstream_tool_name

from .dispatch import note_target, plan_call
from .observability import request_record
from .relay import Current, fails_over, stream_events, stream_failure
from .state import ProxyState
from .streaming import BodyWriter, EventStreamResponse

M = TypeVar("M", bound=BaseModel)
MODEL_CREATED_AT = "2025-01-01T00:00:00Z"


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_json_body(request: Request, limit: int, timeout: float) -> tuple[Any, bytes]:
    """The request body as JSON, and as it came: at most `limit` bytes (refused before reading
    them all), arriving within `timeout` seconds (a slow sender cannot hold a worker)."""
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
        return orjson.loads(body), body
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None


async def parse_body(request: Request, model: type[M]) -> M:
    return (await parse_body_and_bytes(request, model))[0]


async def parse_body_and_bytes(request: Request, model: type[M]) -> tuple[M, bytes]:
    """The validated body, and the bytes it came as (a failover translates them again)."""
    settings = request.app.state.proxy.settings
    data, raw = await read_json_body(request, settings.max_body_bytes, settings.body_timeout)
    if not isinstance(data, dict):
        raise InvalidRequestError("Request body must be a JSON object.")
    try:
        return model.model_validate(data), raw
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None


async def create_message(request: Request) -> Response:
    state: ProxyState = request.app.state.proxy
    settings = state.settings
    record = request_record(request.scope)
    if state.draining:
        raise DrainingError(
            "This kimi-proxy instance is shutting down and takes no new requests; send it "
            "again (a load balancer sends it to another instance)."
        )
    if state.gateway.refusing:
        assert state.gateway.link is not None
        raise SharedStoreDownError(state.gateway.link.down_message())
    message_request, raw = await parse_body_and_bytes(request, MessagesRequest)
    record.stream = message_request.stream
    record.model_asked = message_request.model
    if state.local_tools is not None:  # the proxy's tools are added: keep the parsed request
        message_request = with_local_tool_definitions(message_request, state.local_tools.enabled)
        call = plan_call(state, message_request, request.headers, record)
    else:
        call = plan_call(state, message_request, request.headers, record, raw)
    del raw
    user = request.scope.get("state", {}).get("user")
    if user is not None:  # the user's own limits, before any provider is asked
        limiter, need = state.gateway.limiter, call.prompt_tokens + call.answer_tokens
        if state.pool.shared is not None and state.local_tools is None:
            call.rider = limiter.ask(user, need)  # taken with the first key's: one round trip
        else:
            call.on_end = (await limiter.admit(user, need)).end
    if state.local_tools is not None:
        return await agent_response(state, message_request.stream, call, record)
    if not message_request.stream:
        try:
            return _json(await complete_message(call, record))
        finally:
            call.finish(None)  # a no-op once answered; else the budgets it held are let go
    try:
        release = acquire_stream_slot(state)
    except BaseException:
        call.finish(None)
        raise
    # Nothing but the call needs the parsed request any more: let it go before waiting for the
    # provider (with hundreds of streams opening at once, it is most of the memory).
    del message_request
    try:
        opened: Opened | None = await call.open()
        assert opened is not None
        note_target(record, call, opened)
    except MustWait:
        opened = None
        try:  # the stream starts now: the user's own limits answer before it does
            await call.take_rider_alone()
        except BaseException:
            release()
            call.finish(None)
            raise
    except BaseException:
        release()
        call.finish(None)
        raise
    current = Current(opened)

    async def on_close() -> None:
        release()
        call.finish(None)  # a no-op when the stream ended normally
        if current.opened is not None:
            await current.opened.response.aclose()

    writer = BodyWriter()
    return EventStreamResponse(
        stream_events(call, current, record, writer),
        ping_interval=settings.ping_interval,
        on_close=on_close,
        drain=state.drain,
        writer=writer,
    )


async def complete_message(call: Call, record: RequestRecord) -> dict[str, Any]:
    """A non-streaming answer; a connection that breaks while reading fails over. The caller
    finishes the call whatever happens."""
    opened = await call.open(may_stream_wait=True)
    while True:
        note_target(record, call, opened)
        try:
            completion = await opened.target.key.client.read_completion(opened.response)
        except ProxyError as exc:
            if not fails_over(exc):
                raise
            opened = await call.reopen(exc)
            continue
        message = openai_to_anthropic_message(completion, opened.request)
        usage = message["usage"]
        call.finish(usage["input_tokens"] + usage["output_tokens"])
        record.tokens(usage)
        return message


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
    state: ProxyState, stream: bool, call: Call, record: RequestRecord
) -> Response:
    """Agent mode: the proxy runs its local tools in a loop within this one turn. The turn
    stays on the candidate that answers its first step (the history is in its terms)."""
    assert state.local_tools is not None
    settings = state.settings
    pool = state.pool
    live = [c for c in call.candidates if c.label not in pool.retired]
    if not live:
        raise no_candidate_error(pool, "this request")
    candidate = live[0]
    upstream_request = call.built.get(candidate.label) or call.build(candidate)

    async def open_step(payload: dict[str, Any]) -> Opened:
        step = Call.start(
            pool,
            (candidate,),
            lambda c: replace(upstream_request, payload=payload),
            prompt_tokens=call.prompt_tokens,
            answer_tokens=call.answer_tokens,
            session=call.session,
        )
        opened = await step.open(may_stream_wait=True)
        note_target(record, step, opened)
        return opened

    loop = AgentLoop(
        open=open_step,
        tools=state.local_tools,
        payload=upstream_request.payload,
        max_iterations=settings.max_tool_iterations,
    )
    translator = StreamTranslator(
        upstream_request,
        input_tokens=call.prompt_tokens,
        local_tools=frozenset(upstream_tool_name(n) for n in state.local_tools.enabled),
    )
    if not stream:
        try:
            async with aclosing(loop.events(translator)) as events:
                message = accumulate_message([event async for event in events])
        finally:
            call.finish(None)
        record.tokens(message["usage"])
        return _json(message)
    try:
        release = acquire_stream_slot(state)
    except BaseException:
        call.finish(None)
        raise

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
        call.finish(None)

    return EventStreamResponse(
        body(), ping_interval=settings.ping_interval, on_close=on_close, drain=state.drain
    )


async def count_tokens(request: Request) -> Response:
    state = request.app.state.proxy
    body = await parse_body(request, CountTokensRequest)
    tools_by_name = {t.name: t for t in body.tools or []}
    candidate = state.pool.first_candidate("default", body.model)
    if candidate is None:
        raise no_candidate_error(state.pool, body.model)
    profile = state.pool.spec.providers[candidate.provider].profile
    limits = candidate.limits
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


def _serves(pool: Pool, model_id: str) -> str:
    """What a client model id reaches: its family and the candidates that serve it."""
    route = "background" if "haiku" in model_id.lower() else "default"
    live = [c.label for c in pool.candidates(route, model_id) if c.label not in pool.retired]
    if pool.spec.legacy_router is not None:
        return ", ".join(live) or "nothing"
    return f"{pool.spec.family_for(route)}: {', '.join(live) or 'nothing'}"


async def list_models(request: Request) -> Response:
    """Claude's ids (Claude Code's picker shows ids containing "claude"), each naming the
    family and candidates it reaches, then one entry per family."""
    pool: Pool = request.app.state.proxy.pool
    data = [_model_entry(alias, _serves(pool, alias)) for alias in DEFAULT_ALIASES]
    for family, candidates in pool.spec.families.items():
        if pool.spec.legacy_router is None:
            live = [c.label for c in candidates if c.label not in pool.retired]
            data.append(_model_entry(family, ", ".join(live) or "nothing"))
    return _json(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    return _json(_model_entry(model_id, _serves(request.app.state.proxy.pool, model_id)))


async def health(request: Request) -> Response:
    """Liveness, open to anyone: no URL, no key, nothing a stranger could use. `config_id` (a
    digest of the setup) and `context_window` are what the launcher reads."""
    state = request.app.state.proxy
    pool: Pool = state.pool
    first = pool.first_candidate("default", "claude-sonnet")
    return _json(
        {
            "status": "ok",
            "version": __version__,
            "provider": first.provider if first else None,
            "config_id": pool.spec.config_id(),
            "context_window": pool.spec.smallest_window(),
            "families": {
                family: [c.label for c in candidates if c.label not in pool.retired]
                for family, candidates in pool.spec.families.items()
            },
            "api_key_configured": any(k.disabled is None for k in pool.all_keys()),
            "active_streams": state.active_streams,
            "time": time.time(),
        }
    )


async def ready(request: Request) -> Response:
    """Readiness: 503 once the instance is draining, while no candidate can be served (a
    broken configuration then does not roll out), or while Redis is down under `fail_closed`
    (liveness is `/health`, which never asks Redis)."""
    state: ProxyState = request.app.state.proxy
    if state.draining:
        return _json({"status": "draining", "active_streams": state.active_streams}, 503)
    pool: Pool = state.pool
    if (why := unservable(pool)) is not None:
        return _json({"status": "no_candidate", "reason": why}, 503)
    link = state.gateway.link
    answer: dict[str, Any] = {"status": "ready", "active_streams": state.active_streams}
    if link is not None:
        answer["redis"] = "up" if link.up else "down"
        if state.gateway.refusing:
            return _json({**answer, "status": "redis_down", "policy": "fail_closed"}, 503)
    return _json(answer)


async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    registry = request.app.state.proxy.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def hello(request: Request) -> Response:
    """Claude Code's connectivity probe (`HEAD /api/hello`)."""
    return Response(status_code=200)
