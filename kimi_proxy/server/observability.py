"""The operator's view: one structured log line per request, Prometheus metrics, a debug log.

`ObservabilityMiddleware` (pure ASGI) gives each request a `RequestRecord` (in
`scope["state"]`), a `request-id` response header, and — when the response has finished,
streams included — one JSON log line and its metrics. Routes fill in what only they know:
the models, time to first token, tokens and retries.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import random
import time
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kimi_proxy.config.private_files import open_private
from kimi_proxy.errors import internal_error, redact, send_error
from kimi_proxy.protocol.record import RequestRecord

from .tracing import Tracing

log = logging.getLogger("kimi_proxy.observability")
trace_log = logging.getLogger("kimi_proxy.trace")
#: Lines whose text is the proxy's own JSON (orjson escapes every line break; no key is in a
#: record): redacting them costs ~15 µs a request for nothing.
WRITTEN_BY_US = frozenset({"kimi_proxy.access", "kimi_proxy.trace"})
access_log = logging.getLogger("kimi_proxy.access")


class LazyJson:
    """Serialised only if a debug line is actually written."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return orjson.dumps(self.value, default=str).decode()


REFUSED = "refused"  # the path label of a request without a valid key
OTHER = "other"  # of a path no route serves


class Metrics:
    """Prometheus metrics in a registry of the app's own (so test apps never collide)."""

    def __init__(self) -> None:
        self._exact: set[str] = set()
        self._prefixes: list[tuple[str, str]] = []
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kimi_requests", "Requests by path and status", ["path", "status"], registry=r
        )
        self.errors = Counter("kimi_errors", "Errors by Anthropic error type", ["type"], registry=r)
        self.active_streams = Gauge("kimi_active_streams", "Streams in flight", registry=r)
        self.latency = Histogram(
            "kimi_request_seconds",
            "Request latency",
            ["path"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.ttft = Histogram(
            "kimi_ttft_seconds",
            "Time to first token",
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.tokens = Counter("kimi_tokens", "Tokens by direction", ["direction"], registry=r)
        self.gc_pauses = Histogram(
            "kimi_gc_pause_seconds",
            "Garbage collector pauses by generation (2: a full collection)",
            ["generation"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.retries = Counter("kimi_upstream_retries", "Upstream retries", registry=r)
        self.cost = Counter(
            "kimi_cost_usd",
            "What requests cost at the catalog's prices, by provider and model",
            ["provider", "model"],
            registry=r,
        )
        target = ["provider", "key", "model"]
        self.provider_requests = Counter(
            "kimi_provider_requests",
            "Requests sent per provider, key and model",
            target,
            registry=r,
        )
        self.failovers = Counter(
            "kimi_provider_failovers",
            "Requests that left a provider, key and model for another try",
            target,
            registry=r,
        )
        self.waits = Counter(
            "kimi_provider_waits", "Waits for a key's reset before sending", target, registry=r
        )
        self.wait_seconds = Counter(
            "kimi_provider_wait_seconds", "Time spent waiting for resets", target, registry=r
        )
        self.rate_limited = Counter(
            "kimi_provider_rate_limited",
            "429 answers per provider, key and model",
            target,
            registry=r,
        )

    def route_templates(self, templates: Iterable[str]) -> None:
        """The app's routes (`/v1/models/{model_id:path}`): a request is counted under its
        route's template, so made-up paths cannot grow the series (`path_label`)."""
        for template in templates:
            head, brace, _ = template.partition("{")
            if brace:
                self._prefixes.append((head, template))
            else:
                self._exact.add(template)

    def path_label(self, record: RequestRecord) -> str:
        """`refused` for a request the security layer turned away (its path is the client's
        choice), the route's template, or `other`: a fixed, small set of labels."""
        if record.status in (401, 403):
            return REFUSED
        if record.path in self._exact:
            return record.path
        for head, template in self._prefixes:
            if record.path.startswith(head):
                return template
        return OTHER

    def observe(self, record: RequestRecord) -> None:
        path = self.path_label(record)
        series = self._series
        series(self.requests, path, str(record.status)).inc()
        series(self.latency, path).observe(record.latency_ms / 1000)
        if record.error_type:
            series(self.errors, record.error_type).inc()
        if record.ttft_ms is not None:
            self.ttft.observe(record.ttft_ms / 1000)
        if record.input_tokens:
            series(self.tokens, "in").inc(record.input_tokens)
        if record.output_tokens:
            series(self.tokens, "out").inc(record.output_tokens)
        if record.retries:
            self.retries.inc(record.retries)
        if record.cost_usd:
            series(self.cost, record.provider or "", record.model_used or "").inc(record.cost_usd)

    def _series(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once (`labels()` costs microseconds a call); the
        labels are a small fixed set (`path_label`), the provider's models and error types."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


def new_request_id() -> str:
    """A unique id for logs and the `request-id` header. It guards nothing, so it comes from
    the process's seeded generator, not a system call per request (measured: 1% of CPU)."""
    return f"req_{random.getrandbits(96):024x}"


class Watcher(Protocol):
    """Told of each request as it starts and when it has finished (the dashboard's feed)."""

    def started(self, record: RequestRecord) -> None: ...

    def finished(self, record: RequestRecord) -> None: ...


class ObservabilityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        watchers: tuple[Watcher, ...] = (),
        trace_steps: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.watchers = watchers
        self.trace_steps = trace_steps  # KIMI_TRACE_STEPS: each step to the first token, logged
        self.tracing = tracing  # OpenTelemetry, when an OTLP endpoint is configured
        #: When the last traced response ended (wall, CPU): the next request's trace starts
        #: there, so that what ran between (the previous request's tail) shows.
        self.last_end: tuple[float, float] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(new_request_id(), scope["method"], scope["path"])
        if self.trace_steps:
            record.marks = [] if self.last_end is None else [("last end", *self.last_end)]
            record.mark("arrived (since the last response ended)")
        scope.setdefault("state", {})["record"] = record
        trace = self.tracing.request(scope) if self.tracing is not None else None
        if trace is not None:
            scope["state"]["trace"] = trace
            trace.tracing.captures(record)
        header = (b"request-id", record.request_id.encode())
        for watcher in self.watchers:
            watcher.started(record)
        finished = False

        def finish() -> None:
            """The request's log line, metrics, dashboard entry and span: once."""
            nonlocal finished
            if finished:
                return
            finished = True
            record.latency_ms = round((time.monotonic() - record.started) * 1000, 2)
            self.metrics.observe(record)
            for watcher in self.watchers:
                watcher.finished(record)
            if access_log.isEnabledFor(logging.INFO) and record.path != "/metrics":
                access_log.info("%s", record.as_json().decode())
            if record.marks is not None:
                steps = {"request_id": record.request_id, "steps": record.steps()}
                trace_log.info("%s", orjson.dumps(steps).decode())
                self.last_end = time.perf_counter(), time.thread_time()
            if trace is not None:
                trace.finish(record)

        def send_with_id(message: Message) -> Awaitable[None]:
            # Not a coroutine of its own: a stream's every piece passes here, and hands the
            # server's `send` straight back (one coroutine a piece instead of two).
            kind = message["type"]
            if kind == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            elif (
                kind == "http.response.body"
                and not message.get("more_body", False)
                and not message.get("body")
            ):
                # A stream's end, which carries nothing: the client has all of its answer, and
                # the stream has closed (`EventStreamResponse`). Finishing the record now keeps
                # its ~0.1 ms out of the way of the client's next request, which it sends once
                # this end arrives (bench/first_token.py).
                finish()
            return send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # The one log of a failure nobody foresaw. Not re-raised: the server would log the
            # same traceback again (Starlette re-raises after its handler has answered).
            log.exception("unexpected error on %s %s", record.method, record.path)
            record.error_type = "api_error"
            if record.status == 0:  # nothing sent yet: answer it
                await send_error(send_with_id, internal_error(exc))
        finally:
            finish()


class RedactSecrets(logging.Filter):
    """Replace API keys and tokens in every log record with `[REDACTED]`, and keep each record
    on one line: a line break in text a client sent (a tool name, a model id) is written `\\n`,
    so no client can start a log line of its own (a forged access-log line bills someone)."""

    def __init__(self, secrets_to_hide: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets_to_hide if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in WRITTEN_BY_US:  # JSON the proxy wrote itself, never holding a secret
            return True
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if "\n" in cleaned or "\r" in cleaned:
            cleaned = cleaned.replace("\r", "\\r").replace("\n", "\\n")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotated log file only its owner reads (0600), backups included."""

    def _open(self) -> Any:
        descriptor = open_private(self.baseFilename, append=True)
        return os.fdopen(descriptor, self.mode, encoding=self.encoding, errors=self.errors)


def setup_logging(
    level: str, log_file: Path | None, secrets_to_hide: list[str], log_prompts: bool = False
) -> None:
    """Console logging at `level`; with `log_file`, a rotated debug log (0600) of the event
    flow — the prompts and answers in it only with `log_prompts`. Every handler redacts
    secrets and keeps each record on one line."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if log_file else level.upper())
    redact = RedactSecrets(secrets_to_hide)
    console = logging.StreamHandler()
    console.setLevel(level.upper())
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handlers: list[logging.Handler] = [console]
    if log_file:
        rotating = PrivateRotatingFileHandler(
            log_file, maxBytes=20_000_000, backupCount=3, encoding="utf-8"
        )
        rotating.setLevel(logging.DEBUG)
        rotating.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handlers.append(rotating)
    for handler in handlers:
        handler.addFilter(redact)
        root.addHandler(handler)
    for noisy in ("httpcore", "httpx", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kimi_proxy.flow's debug lines are the provider payloads and chunks: the conversation.
    logging.getLogger("kimi_proxy.flow").setLevel(logging.DEBUG if log_prompts else logging.INFO)


def request_record(scope: Scope) -> RequestRecord:
    """The request's record; a detached one when the app runs without the middleware."""
    record = scope.get("state", {}).get("record")
    if isinstance(record, RequestRecord):
        return record
    return RequestRecord("", scope.get("method", ""), scope.get("path", ""))
