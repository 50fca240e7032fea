"""OpenTelemetry traces, configured by the standard variables only: with no
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) there is no tracing, and nothing of it
on the request's path (not even the SDK's import).

When on, each request is a SERVER span continuing an incoming W3C `traceparent` (Claude Code
sends one with `CLAUDE_CODE_PROPAGATE_TRACEPARENT=1`), and each provider attempt a CLIENT span
`chat {model}` under it, with the GenAI semantic conventions' attributes (`gen_ai.*`), the
`error.type` of a failed attempt (a failover shows as two spans), and the proxy's own `kimi.*`
(the key's name — never the key —, user, route, cost, time waited). Prompts and answers are never
in a span. Spans are sent by the SDK's batch processor, from its own thread, over OTLP/HTTP
(protobuf; `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` (default `kimi-proxy`) and
`OTEL_TRACES_SAMPLER` are read by the SDK itself). With `KIMI_OTEL_CAPTURE_CONTENT=true` only,
each `chat` span also carries `gen_ai.input.messages` (the messages sent, as JSON) and
`gen_ai.output.messages` (the answer's text), each cut at `CAPTURED_CHARS`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kimi_proxy.errors import ProxyError
from kimi_proxy.protocol.record import RequestRecord

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from kimi_proxy.providers.pool import Target

log = logging.getLogger("kimi_proxy")
ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
CAPTURED_CHARS = 65_536  # of a prompt or an answer, when content is captured


class Tracing:
    """The tracer of one app (its own provider: never the process-global one)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        protocol = next((env[v] for v in PROTOCOLS if env.get(v)), "http/protobuf")
        if protocol != "http/protobuf":
            log.warning(
                "OTEL_EXPORTER_OTLP_PROTOCOL=%s: kimi-proxy sends traces over http/protobuf",
                protocol,
            )
        service = env.get("OTEL_SERVICE_NAME") or "kimi-proxy"
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer: Tracer = self.provider.get_tracer("kimi_proxy")
        self.propagator = TraceContextTextMapPropagator()
        #: Prompts and answers in spans: only when asked, never by default.
        self.capture = env.get("KIMI_OTEL_CAPTURE_CONTENT", "").lower() in ("1", "true", "yes")

    def request(self, scope: Mapping[str, Any]) -> RequestTrace:
        """The SERVER span of one request, continuing its `traceparent`."""
        from opentelemetry.trace import SpanKind

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        context = self.propagator.extract(headers)
        span = self.tracer.start_span(
            f"{scope['method']} {scope['path']}", context=context, kind=SpanKind.SERVER
        )
        return RequestTrace(self, span)

    def captures(self, record: RequestRecord) -> None:
        """With content capture on, the record keeps the answer's text for the span."""
        if self.capture:
            record.answer_text = []

    def shutdown(self) -> None:
        self.provider.shutdown()  # sends what is left


def tracing_from_env(env: Mapping[str, str]) -> Tracing | None:
    if not any(env.get(v) for v in ENDPOINTS):
        return None
    return Tracing(env)


@dataclass(slots=True)
class RequestTrace:
    """One request's spans: its SERVER span, and a `chat` span per provider attempt."""

    tracing: Tracing
    span: Span
    attempts: list[Attempt] = field(default_factory=list)

    def attempt(self, target: Target, max_tokens: int, body: bytes) -> Attempt:
        """A CLIENT span for one attempt at `target` (`providers.call.AttemptTracer`)."""
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        candidate = target.candidate
        span = self.tracing.tracer.start_span(
            f"chat {candidate.model}",
            context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": candidate.provider,
                "gen_ai.request.model": candidate.model,
                "gen_ai.request.max_tokens": max_tokens,
                "server.address": urlsplit(target.key.provider.base_url).hostname or "",
                "kimi.key": target.key.key.name,
            },
        )
        if self.tracing.capture:
            messages = _messages_of(body)
            span.set_attribute("gen_ai.input.messages", messages[:CAPTURED_CHARS])
        attempt = Attempt(span)
        self.attempts.append(attempt)
        return attempt

    def tool(self, name: str) -> Any:
        """An INTERNAL span `execute_tool NAME` under the request's (a context manager)."""
        from opentelemetry import trace

        return self.tracing.tracer.start_as_current_span(
            f"execute_tool {name}",
            context=trace.set_span_in_context(self.span),
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name},
        )

    def finish(self, record: RequestRecord) -> None:
        """End every span with what the request's record knows (never a prompt or a key)."""
        from opentelemetry.trace import Status, StatusCode

        shared: dict[str, Any] = {
            "kimi.user": record.user or "",
            "kimi.route": record.route or "",
            "kimi.cost_usd": record.cost_usd or 0.0,
            "kimi.wait_ms": record.waited_ms,
        }
        if record.session:
            shared["gen_ai.conversation.id"] = record.session
        for attempt in self.attempts:
            if attempt.ended:
                continue
            attempt.span.set_attributes(
                {
                    **shared,
                    "gen_ai.response.model": record.model_used or "",
                    "gen_ai.usage.input_tokens": record.input_tokens or 0,
                    "gen_ai.usage.output_tokens": record.output_tokens or 0,
                    "gen_ai.usage.cache_read.input_tokens": record.cached_tokens or 0,
                    "gen_ai.response.finish_reasons": [record.stop_reason or ""],
                }
            )
            if record.answer_text is not None:
                answer = "".join(record.answer_text)[:CAPTURED_CHARS]
                attempt.span.set_attribute("gen_ai.output.messages", answer)
            if record.error_type:
                attempt.span.set_attribute("error.type", record.error_type)
                attempt.span.set_status(Status(StatusCode.ERROR))
            attempt.span.end()
        self.span.set_attributes({**shared, "http.response.status_code": record.status})
        if record.status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


@dataclass(slots=True)
class Attempt:
    span: Span
    ended: bool = False

    def failed(self, error: ProxyError | None) -> None:
        """The attempt failed before its answer (a failover follows, or the request ends)."""
        from opentelemetry.trace import Status, StatusCode

        if self.ended:
            return
        self.ended = True
        self.span.set_attribute("error.type", error.error_type if error else "connection")
        self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


def _messages_of(body: bytes) -> str:
    import orjson

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    return orjson.dumps(payload.get("messages", [])).decode() if isinstance(payload, dict) else ""
