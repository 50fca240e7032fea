"""The Messages API routes (`/v1/messages`, `count_tokens`): glue between the wire and the pure
translators. A stream's body is relay.py's; the proxy's own endpoints are about.py's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kimi_proxy.agent.loop import AgentLoop
from kimi_proxy.agent.tools import tool_definitions
from kimi_proxy.errors import (
    DrainingError,
    OverloadedError,
    ProxyError,
    SharedStoreDownError,
)
from kimi_proxy.protocol.anthropic import (
    CountTokensRequest,
    MessagesRequest,
    Tool,
)
from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.protocol.sse import encode_event
from kimi_proxy.providers.call import Call, MustWait, Opened
from kimi_proxy.providers.routing import no_candidate_error
from kimi_proxy.translate.accumulate import accumulate_message
from kimi_proxy.translate.messages import convert_messages
from kimi_proxy.translate.response import openai_to_anthropic_message
from kimi_proxy.translate.stream import StreamTranslator
from kimi_proxy.translate.tokens import estimate_tokens
from kimi_proxy.translate.tools import convert_tools, upstream_tool_name

from .bodies import json_response, parse_body, parse_body_and_bytes
from .dispatch import note_target, plan_call
from .observability import request_record
from .relay import Current, fails_over, stream_events, stream_failure
from .state import ProxyState
from .streaming import BodyWriter, EventStreamResponse


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
            return json_response(await complete_message(call, record))
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
        stall_timeout=settings.read_timeout,
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
    steps: list[Call] = []  # one per upstream call of the turn, each settled at its usage

    async def open_step(payload: dict[str, Any]) -> Opened:
        step = Call.start(
            pool,
            (candidate,),
            lambda c: replace(upstream_request, payload=payload),
            prompt_tokens=call.prompt_tokens,
            answer_tokens=call.answer_tokens,
            session=call.session,
        )
        steps.append(step)
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

    def settle() -> None:
        """Each step at what it used, and the turn (its user's grant) at their sum."""
        used = translator.step_tokens
        for index, step in enumerate(steps):
            step.finish(used[index] if index < len(used) else None)
        known = [n for n in used if n is not None]
        call.finish(sum(known) if known else None)

    if not stream:
        try:
            async with aclosing(loop.events(translator)) as events:
                message = accumulate_message([event async for event in events])
        finally:
            settle()
        record.tokens(translator.billed_usage())
        return json_response(message)
    try:
        release = acquire_stream_slot(state)
    except BaseException:
        settle()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            async with aclosing(loop.events(translator)) as events:
                async for event in events:
                    if event["type"] == "content_block_delta" and record.ttft_ms is None:
                        record.first_token()
                    elif event["type"] == "message_delta":
                        record.tokens(translator.billed_usage())
                    yield encode_event(event)
        except Exception as exc:
            yield stream_failure(exc, record)

    async def on_close() -> None:
        release()
        settle()

    return EventStreamResponse(
        body(),
        ping_interval=settings.ping_interval,
        on_close=on_close,
        drain=state.drain,
        stall_timeout=settings.read_timeout,
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
    return json_response({"input_tokens": estimate_tokens(payload)})
