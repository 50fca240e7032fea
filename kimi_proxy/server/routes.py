"""The Messages API routes (`/v1/messages`, `count_tokens`): glue between the wire and the pure
translators. A stream's body is relay.py's; the proxy's own endpoints are about.py's."""

from __future__ import annotations

import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kimi_proxy.agent.tools import tool_definitions
from kimi_proxy.documents.expand import has_pdfs
from kimi_proxy.errors import (
    DrainingError,
    ProxyError,
    SharedStoreDownError,
)
from kimi_proxy.gateway.limits import Need
from kimi_proxy.protocol.anthropic import (
    CountTokensRequest,
    MessagesRequest,
    Tool,
)
from kimi_proxy.protocol.profile import ProviderProfile
from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.providers.call import Call, MustWait, Opened
from kimi_proxy.providers.routing import first_candidate_for, no_candidate_error
from kimi_proxy.translate.calibration import Prompt, measure
from kimi_proxy.translate.messages import convert_messages
from kimi_proxy.translate.response import openai_to_anthropic_message
from kimi_proxy.translate.tools import convert_tools
from kimi_proxy.translate.web_search import (
    search_options,
    side_call_query,
    with_search_function,
)

from .bodies import json_response, parse_body_and_bytes
from .dispatch import note_target, plan_call
from .observability import request_record
from .relay import Current, fails_over, stream_events
from .state import ProxyState
from .streaming import BodyWriter, EventStreamResponse
from .turns import agent_response, search_response
from .vision import describe_images, needs_describing


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
    message_request, body, large = await parse_body_and_bytes(request, MessagesRequest)
    record.mark("body read and validated")
    raw: bytes | None = body
    record.stream = message_request.stream
    record.model_asked = message_request.model
    if has_pdfs(message_request):  # a walk over the blocks: 1–8 µs (`b"pdf" in raw` took 33)
        message_request, raw = await state.read_pdfs(message_request), None
    if needs_describing(state, message_request):
        message_request, raw = await describe_images(state, message_request, request.headers), None
    search = search_options(message_request.tools) if state.local_tools is None else None
    side_query = None
    if state.local_tools is not None:  # the proxy's tools are added: keep the parsed request
        message_request = with_local_tool_definitions(message_request, state.local_tools.enabled)
        raw = None
    elif search is not None:  # the proxy searches for the model
        side_query = side_call_query(message_request, search)
        message_request = with_search_function(message_request, search)
        raw = None
    call = await plan_call(state, message_request, request.headers, record, raw, large=large)
    call.tracer = request.scope["state"].get("trace")  # OpenTelemetry's, when it is on
    record.mark("planned (route, translation, estimate)")
    del raw, body
    user = request.scope.get("state", {}).get("user")
    if user is not None:  # the user's own limits, before any provider is asked
        limiter, bound = state.gateway.limiter, call.prompt_bound()
        need = Need(
            call.prompt_tokens + call.answer_tokens,
            call.worst_cost(),
            bound + call.answer_tokens,
            call.worst_cost(bound),
        )
        if state.pool.shared is not None and state.local_tools is None and search is None:
            call.rider = limiter.ask(user, need)  # with the first key's: one round trip
        else:
            call.on_end = (await limiter.admit(user, need)).end
    if state.local_tools is not None:
        return await agent_response(state, message_request.stream, call, record)
    if search is not None:
        stream = message_request.stream
        return await search_response(state, stream, call, record, search, side_query)
    if not message_request.stream:
        try:
            return json_response(await complete_message(call, record))
        finally:
            call.finish(None)  # a no-op once answered; else the budgets it held are let go
    try:
        release = state.take_stream_slot()
    except BaseException:
        call.finish(None)
        raise
    # Nothing but the call needs the parsed request any more: let it go while waiting for the
    # provider (with hundreds of streams opening at once, it is most of the memory).
    state.free_later(message_request)
    del message_request
    try:
        opened: Opened | None = await call.open()
        assert opened is not None
        record.mark("provider's headers")
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
        # A no-op when the stream ended normally; a cancelled one is billed what it used.
        call.finish(None, record.cost_usd if record.cancelled else None)
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
        record.stop_reason = message["stop_reason"]
        if record.answer_text is not None:  # OpenTelemetry's content capture, when asked
            record.answer_text += [b["text"] for b in message["content"] if b["type"] == "text"]
        record.tokens(usage)  # its cost first: the user's dollars settle to it
        call.counted(usage)
        call.finish(usage["input_tokens"] + usage["output_tokens"], record.cost_usd)
        return message


def with_local_tool_definitions(
    request: MessagesRequest, enabled: tuple[str, ...]
) -> MessagesRequest:
    """Offer the proxy's local tools that the client did not define itself."""
    have = {tool.name for tool in request.tools or ()}
    missing = [Tool.model_validate(t) for t in tool_definitions(enabled) if t["name"] not in have]
    if not missing:
        return request
    return request.model_copy(update={"tools": [*(request.tools or ()), *missing]})


async def count_tokens(request: Request) -> Response:
    state: ProxyState = request.app.state.proxy
    user = request.scope.get("state", {}).get("user")
    if user is not None:  # before the body is read
        await state.gateway.limiter.admit_count(user)
    body, _, large = await parse_body_and_bytes(request, CountTokensRequest)
    if has_pdfs(body):
        body = await state.read_pdfs(body)
    candidate = first_candidate_for(state.pool, body.model)
    if candidate is None:
        raise no_candidate_error(state.pool, body.model)
    profile = state.pool.spec.providers[candidate.provider].profile
    counted = functools.partial(_prompt, body, profile, candidate.limits.accepts_images)
    prompt = await state.off_loop(counted) if large else counted()
    return json_response({"input_tokens": state.pool.calibration(candidate.model).estimate(prompt)})


def _prompt(body: CountTokensRequest, profile: ProviderProfile, images: bool) -> Prompt:
    """What the provider would count of `body`, measured (`translate.calibration`)."""
    tools_by_name = {t.name: t for t in body.tools or []}
    payload: dict[str, Any] = {"messages": convert_messages(body, profile, tools_by_name, images)}
    if body.tools:
        payload["tools"] = convert_tools(body.tools, body.messages, profile)
    return measure(payload)
