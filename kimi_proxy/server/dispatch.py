"""Between the route handlers and the provider pool: plan a request's call, and write down in
its record where it went (the access log, the usage meter and the dashboard read it)."""

from __future__ import annotations

from starlette.datastructures import Headers

from kimi_proxy.protocol.anthropic import MessagesRequest
from kimi_proxy.protocol.record import RequestRecord, client_id
from kimi_proxy.providers.call import Call, Opened
from kimi_proxy.providers.routing import inline
from kimi_proxy.providers.routing import plan_call as plan_pool_call

from .state import ProxyState


async def plan_call(
    state: ProxyState,
    message_request: MessagesRequest,
    headers: Headers,
    record: RequestRecord,
    raw: bytes | None = None,
    *,
    large: bool = False,
) -> Call:
    """The pool call for this request (`providers.routing.plan_call`), its route and family,
    session and agent written in `record`; a `large` body is translated off the event loop."""
    planned = await plan_pool_call(
        state.pool,
        message_request,
        headers,
        max_output_tokens=state.settings.max_output_tokens,
        raw=raw,
        offload=state.off_loop if large else inline,
    )
    record.route = planned.route
    record.family = planned.family
    record.session = planned.call.session  # the id as routing kept it (`client_id`)
    record.agent = client_id(headers.get("x-claude-code-agent-id"))
    return planned.call


def note_target(record: RequestRecord, call: Call, opened: Opened) -> None:
    candidate = opened.target.candidate
    record.model_used = candidate.model
    record.provider = candidate.provider
    record.prices = candidate.limits.prices
    record.context_window = candidate.limits.context_window
    record.key = opened.target.key.key.name
    record.retries = call.retries
    record.failovers = call.failovers
    record.waited_ms = round(call.waited * 1000, 1)
