"""The record of one request: what the access log writes as a JSON line, what the usage meter
bills and what the dashboard's feed shows. The server fills it in as the request runs; everyone
below the server reads it. Data only: no I/O here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from .profile import Prices

#: What a client-chosen id (Claude Code's session and agent ids, UUIDs) may look like to be kept.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def client_id(value: str | None) -> str | None:
    """A session or agent id the client sent, or None when it is missing or not an id: over
    128 characters, or other characters than letters, digits and `._:-`. Such ids key usage
    rows, the dashboard's sessions and key affinity, so a client cannot grow them unbounded."""
    return value if value is not None and _CLIENT_ID.fullmatch(value) else None


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    stream: bool | None = None
    model_asked: str | None = None
    model_used: str | None = None
    status: int = 0
    error_type: str | None = None
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    retries: int = 0
    cached_tokens: int | None = None
    cost_usd: float | None = None
    route: str | None = None
    family: str | None = None
    provider: str | None = None
    key: str | None = None  # the key's configured name, never the key
    failovers: int = 0
    waited_ms: float = 0.0
    session: str | None = None  # x-claude-code-session-id
    agent: str | None = None  # x-claude-code-agent-id
    user: str | None = None
    team: str | None = None  # the user's team, when it has one
    cancelled: bool = False  # a stream the client left before its end (billed what it used)
    web_searches: int = 0  # run by the proxy for the `web_search` server tool
    stop_reason: str | None = None  # the answer's (end_turn, tool_use, max_tokens…)
    context_window: int | None = None
    wall_start: float = field(default_factory=time.time)
    prices: Prices | None = None  # of the model that answered (not logged)
    #: With `KIMI_TRACE_STEPS`: (step, wall, CPU) at each step to the first token (not logged).
    marks: list[tuple[str, float, float]] | None = None
    #: With OpenTelemetry's content capture only: the answer's text, for its span (not logged).
    answer_text: list[str] | None = None

    def tokens(self, usage: dict[str, Any]) -> None:
        self.input_tokens = usage.get("input_tokens")
        self.output_tokens = usage.get("output_tokens")
        self.cached_tokens = usage.get("cache_read_input_tokens")
        if self.prices is not None:
            self.cost_usd = round(
                self.prices.cost(
                    self.input_tokens or 0, self.cached_tokens or 0, self.output_tokens or 0
                ),
                8,
            )

    def searched(self, count: int, price_per_1k: float) -> None:
        """The turn's web searches, and their price on top of its tokens' (after `tokens`)."""
        self.web_searches = count
        if count and price_per_1k:
            self.cost_usd = round((self.cost_usd or 0.0) + count * price_per_1k / 1000, 8)

    @property
    def context_tokens(self) -> int:
        """How full the conversation's context was: the input, cached part included."""
        return (self.input_tokens or 0) + (self.cached_tokens or 0)

    def mark(self, step: str) -> None:
        """The time a step of the path to the first token ended (traced requests only)."""
        if self.marks is not None:
            self.marks.append((step, time.perf_counter(), time.thread_time()))

    def steps(self) -> list[dict[str, Any]]:
        """Each traced step's wall and CPU milliseconds since the step before."""
        marks = self.marks or []
        return [
            {
                "step": step,
                "wall_ms": round((wall - marks[i][1]) * 1000, 3),
                "cpu_ms": round((cpu - marks[i][2]) * 1000, 3),
            }
            for i, (step, wall, cpu) in enumerate(marks[1:])
        ]

    def first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = round((time.monotonic() - self.started) * 1000, 2)

    def as_json(self) -> bytes:
        return orjson.dumps({name: getattr(self, name) for name in LOGGED_FIELDS})


LOGGED_FIELDS = tuple(
    f.name
    for f in fields(RequestRecord)
    if f.name not in ("started", "wall_start", "prices", "marks", "answer_text")
)
