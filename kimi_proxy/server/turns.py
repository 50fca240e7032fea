"""Turns that span several model calls inside one Anthropic message: agent mode (the proxy's
local tools) and web search (Anthropic's `web_search` server tool). The turn stays on the
candidate that the request's call would try first (the history is in its terms); each model
call is a call through the pool, settled at its usage, and the turn (its user's grant) at
their sum. A turn the client cancels is billed at what it used so far, as a relayed stream is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.responses import Response

from kimi_proxy.agent.loop import AgentLoop
from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.protocol.sse import encode_event
from kimi_proxy.providers.call import Call, Opened
from kimi_proxy.providers.routing import no_candidate_error
from kimi_proxy.providers.spec import CandidateSpec
from kimi_proxy.search.turn import SearchTurn
from kimi_proxy.translate.accumulate import accumulate_message
from kimi_proxy.translate.blocks import Event
from kimi_proxy.translate.request import UpstreamRequest
from kimi_proxy.translate.stream import StreamTranslator
from kimi_proxy.translate.thinking import require_reasoning
from kimi_proxy.translate.tools import upstream_tool_name
from kimi_proxy.translate.web_search import SEARCH_FUNCTION, SearchOptions

from .bodies import json_response
from .dispatch import note_target
from .relay import stream_failure
from .state import ProxyState
from .streaming import EventStreamResponse
from .tracing import RequestTrace


@dataclass(slots=True)
class Turn:
    """The model calls of one turn, all on one candidate."""

    state: ProxyState
    call: Call  # the request's own: its user's grant ends with the turn
    record: RequestRecord
    candidate: CandidateSpec
    request: UpstreamRequest  # the first call's translation
    steps: list[Call] = field(default_factory=list)

    @classmethod
    def begin(cls, state: ProxyState, call: Call, record: RequestRecord) -> Turn:
        pool = state.pool
        live = pool.live(call.candidates)
        if not live:
            raise no_candidate_error(pool, "this request")
        request = call.built.get(live[0].label) or call.build(live[0])
        return cls(state, call, record, live[0], request)

    async def open_step(self, payload: dict[str, Any]) -> Opened:
        call = self.call
        if self.request.reasoning_required:  # the calls the turn made carry it too
            require_reasoning(payload["messages"], self.request.reasoning_required)
        step = Call.start(
            self.state.pool,
            (self.candidate,),
            lambda c: replace(self.request, payload=payload),
            prompt_tokens=call.prompt_tokens,
            answer_tokens=call.answer_tokens,
            session=call.session,
        )
        step.tracer = call.tracer
        self.steps.append(step)
        opened = await step.open(may_stream_wait=True)
        note_target(self.record, step, opened)
        return opened

    def settle(self, translator: StreamTranslator) -> None:
        """Each step at what it used, and the turn (its user's grant) at their sum."""
        used = translator.step_tokens
        for index, step in enumerate(self.steps):
            step.finish(used[index] if index < len(used) else None)
        known = [n for n in used if n is not None]
        self.call.finish(sum(known) if known else None, self.record.cost_usd)


async def agent_response(
    state: ProxyState, stream: bool, call: Call, record: RequestRecord
) -> Response:
    """Agent mode: the proxy runs its local tools in a loop within this one turn."""
    assert state.local_tools is not None
    turn = Turn.begin(state, call, record)
    trace = call.tracer if isinstance(call.tracer, RequestTrace) else None
    loop = AgentLoop(
        open=turn.open_step,
        tools=state.local_tools,
        payload=turn.request.payload,
        max_iterations=state.settings.max_tool_iterations,
        tool_span=trace.tool if trace is not None else None,
    )
    translator = StreamTranslator(
        turn.request,
        input_tokens=call.prompt_tokens,
        local_tools=frozenset(upstream_tool_name(n) for n in state.local_tools.enabled),
    )
    return await turn_response(turn, stream, translator, loop.events(translator))


async def search_response(
    state: ProxyState,
    stream: bool,
    call: Call,
    record: RequestRecord,
    options: SearchOptions,
    side_query: str | None,
) -> Response:
    """A request offering `web_search`: the proxy searches for the model within this turn."""
    turn = Turn.begin(state, call, record)
    trace = call.tracer if isinstance(call.tracer, RequestTrace) else None
    search = SearchTurn(
        open=turn.open_step,
        searcher=state.searcher,
        payload=turn.request.payload,
        options=options,
        side_query=side_query,
        tool_span=trace.tool if trace is not None else None,
    )
    translator = StreamTranslator(
        turn.request, input_tokens=call.prompt_tokens, local_tools=frozenset({SEARCH_FUNCTION})
    )
    return await turn_response(turn, stream, translator, search.events(translator))


async def turn_response(
    turn: Turn,
    stream: bool,
    translator: StreamTranslator,
    events: AsyncGenerator[Event, None],
) -> Response:
    """The turn's events as one JSON message, or as the stream's body."""
    state, record = turn.state, turn.record
    price = state.searcher.settings.price_per_1k if state.searcher is not None else 0.0

    def bill(record: RequestRecord, usage: dict[str, int]) -> None:
        record.tokens(usage)
        record.searched(translator.web_searches, price)

    if not stream:
        try:
            async with aclosing(events) as running:
                message = accumulate_message([event async for event in running])
            bill(record, translator.billed_usage())  # before settling: dollars settle to its cost
        finally:
            turn.settle(translator)
        return json_response(message)
    try:
        release = state.take_stream_slot()
    except BaseException:
        turn.settle(translator)
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            async with aclosing(events) as running:
                async for event in running:
                    if event["type"] == "content_block_delta" and record.ttft_ms is None:
                        record.first_token()
                    elif event["type"] == "message_delta":
                        bill(record, translator.billed_usage())
                    yield encode_event(event)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away (Esc in Claude Code): bill what the turn used so far.
            record.cancelled = True
            bill(record, translator.partial_usage())
            raise
        except Exception as exc:
            yield stream_failure(exc, record)

    async def on_close() -> None:
        release()
        turn.settle(translator)

    return EventStreamResponse(
        body(),
        ping_interval=state.settings.ping_interval,
        on_close=on_close,
        drain=state.drain,
        stall_timeout=state.settings.read_timeout,
    )
