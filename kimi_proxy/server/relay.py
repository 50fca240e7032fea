"""The body of a streamed message: the provider's chunks translated and relayed as they arrive.

`stream_events` is the response's body and keeps the control flow: `message_start`, failover to
the next provider until the first content block has gone out, the closing events, and every
failure as an SSE `error` event. In between, the provider's chunks do not pass through it: the
provider connection hands each network read to `_deliver`'s function, which translates it and
writes the events at once (`UpstreamClient.relay`, `BodyWriter`; docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kimi_proxy.errors import (
    ApiError,
    BadGatewayError,
    GatewayTimeoutError,
    OverloadedError,
    ProxyError,
    RateLimitError,
    internal_error,
    render_sse,
)
from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.protocol.sse import encode_events
from kimi_proxy.providers.call import Call, Opened
from kimi_proxy.translate.blocks import Event
from kimi_proxy.translate.request import UpstreamRequest
from kimi_proxy.translate.response import new_message_id
from kimi_proxy.translate.stream import StreamTranslator
from kimi_proxy.upstream.client import Deliver

from .dispatch import note_target
from .observability import LazyJson
from .streaming import BodyWriter

log = logging.getLogger("kimi_proxy.relay")
flow_log = logging.getLogger("kimi_proxy.flow")


def fails_over(error: ProxyError) -> bool:
    """Whether a failure before the first content block is worth another provider."""
    return isinstance(error, ApiError | GatewayTimeoutError | RateLimitError | OverloadedError)


@dataclass(slots=True)
class Current:
    """The provider response a stream reads now (another one after a failover)."""

    opened: Opened | None


async def stream_events(
    call: Call, current: Current, record: RequestRecord, writer: BodyWriter
) -> AsyncIterator[bytes]:
    """The SSE body: translated events, pings while the provider is silent, errors as events.

    The provider's chunks are translated and written as each network read brings them, from
    the read callback (`UpstreamClient.relay`, `BodyWriter`); what comes before and after them
    is yielded. Until the first content block has gone out, a provider that fails (a drop, a
    timeout, an error event) is replaced by the next one the pool picks, under the same
    `message_start`.
    """
    message_id = new_message_id()
    started = False
    while True:
        translator: StreamTranslator | None = None
        try:
            if current.opened is None:  # a wait for a reset: the client gets pings meanwhile
                if not started:
                    started = True
                    first = next(iter(call.built.values()))
                    yield encode_events(_start(first, message_id, call.prompt_tokens))
                current.opened = await call.open(may_stream_wait=True)
                note_target(record, call, current.opened)
            opened = current.opened
            client = opened.target.key.client
            translator = StreamTranslator(
                opened.request, message_id=message_id, input_tokens=call.prompt_tokens
            )
            call.sent(opened)
            if not started:  # held for the first delta, when it came with the headers
                started = True
                writer.hold(encode_events(translator.start()))
                record.mark("message_start ready")

            try:
                await client.relay(opened.response, _deliver(translator, writer, record, call))
            finally:
                await writer.drained()
            if not translator.finished:
                raise BadGatewayError(
                    "The provider closed the stream before finishing the message; try again."
                )
            closing = translator.finish()
            usage = closing[-2]["usage"]
            record.stop_reason = closing[-2]["delta"]["stop_reason"]
            record.tokens(usage)
            call.counted(usage)
            call.finish(usage["input_tokens"] + usage["output_tokens"], record.cost_usd)
            if call.pool.shared is not None:
                # The settlement goes to Redis before the last events go to the client, so
                # that its work is this stream's tail, not the next request's wait (bench/).
                await asyncio.sleep(0)
            yield encode_events(closing)
            return
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away (Esc in Claude Code): bill what it cost so far.
            record.cancelled = True
            record.tokens(
                translator.partial_usage()
                if translator is not None
                else {"input_tokens": call.prompt_tokens, "output_tokens": 0}
            )
            raise
        except Exception as exc:
            if (
                isinstance(exc, ProxyError)
                and translator is not None
                and not translator.has_content
                and fails_over(exc)
                and current.opened is not None
            ):
                await current.opened.response.aclose()
                current.opened = None
                try:
                    current.opened = await call.reopen(exc)
                except Exception as final:
                    yield stream_failure(final, record)
                    return
                note_target(record, call, current.opened)
                continue
            call.finish(None)
            yield stream_failure(exc, record)
            return


def _deliver(
    translator: StreamTranslator, writer: BodyWriter, record: RequestRecord, call: Call
) -> Deliver:
    """What the relay does with each network read's chunks: translate them and write their
    events out at once, as one piece (the first token on its own, before anything else)."""
    feed = translator.feed
    debug = flow_log.isEnabledFor(logging.DEBUG)
    captured = record.answer_text

    def deliver(batch: list[dict[str, Any]]) -> asyncio.Future[None] | None:
        events: list[Event] = []
        wait = None
        for chunk in batch:
            events += feed(chunk)
            if events and record.ttft_ms is None:  # the first token goes at once
                record.mark("first content chunk translated")
                record.first_token()
                call.answered()
                wait = writer.write(encode_events(events))
                record.mark("first delta written")
                if captured is not None:
                    capture(events, captured)
                events = []
        if captured is not None:  # OpenTelemetry's content capture: off unless asked
            capture(events, captured)
        if debug:
            flow_log.debug("chunks %s -> events %s", LazyJson(batch), LazyJson(events))
        return writer.write(encode_events(events)) if events else wait

    return deliver


def capture(events: list[Event], into: list[str]) -> None:
    """The answer's text in `events` (OpenTelemetry's content capture)."""
    into += (
        e["delta"]["text"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"].get("type") == "text_delta"
    )


def _start(request: UpstreamRequest, message_id: str, input_tokens: int) -> list[Event]:
    return StreamTranslator(request, message_id=message_id, input_tokens=input_tokens).start()


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
