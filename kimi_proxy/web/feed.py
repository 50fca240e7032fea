"""What the dashboard and the status line show: requests in flight, the last 100 finished, the
last hour per minute, and per session and per user today. In-process, per worker.

Recording a request costs a dict and a few additions (the benchmark measures it); the live
feed to watching dashboards is built only when someone watches (`watching`).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.protocol.totals import Today

RECENT = 100
MINUTES = 60
QUEUE_SIZE = 256  # events a slow dashboard may fall behind before it misses some


@dataclass(slots=True)
class Minute:
    start: float
    ttfts: list[float] = field(default_factory=list)
    output_tokens: int = 0
    stream_seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    tokens_by_provider: Counter[str] = field(default_factory=Counter)

    def point(self) -> dict[str, Any]:
        ttfts = sorted(self.ttfts)
        return {
            "t": self.start,
            "ttft_p50": statistics.median(ttfts) if ttfts else None,
            "ttft_p95": ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.95))] if ttfts else None,
            "tokens_per_s": (
                round(self.output_tokens / self.stream_seconds, 1) if self.stream_seconds else None
            ),
            "statuses": dict(self.statuses),
            "tokens_by_provider": dict(self.tokens_by_provider),
        }


def row(record: RequestRecord) -> dict[str, Any]:
    """A finished (or running) request as the dashboard's table shows it."""
    seconds = (record.latency_ms - (record.ttft_ms or 0.0)) / 1000
    output = record.output_tokens or 0
    return {
        "id": record.request_id,
        "time": record.wall_start,
        "session": record.session,
        "user": record.user,
        "route": record.route,
        "family": record.family,
        "provider": record.provider,
        "model": record.model_used,
        "key": record.key,
        "status": record.status,
        "error": record.error_type,
        "waited_ms": record.waited_ms,
        "failovers": record.failovers,
        "ttft_ms": record.ttft_ms,
        "input_tokens": record.input_tokens,
        "cached_tokens": record.cached_tokens,
        "output_tokens": output,
        "tokens_per_s": round(output / seconds, 1) if output and seconds > 0 else None,
        "web_searches": record.web_searches,
        "cost_usd": record.cost_usd,
    }


class SharedReader(Protocol):
    """What every instance wrote (`gateway/shared_view.py`, with Redis): read before the
    instance's own feed, which answers when it gives None."""

    async def recent(self) -> list[dict[str, Any]] | None: ...

    async def session(self, session_id: str) -> Today | None: ...


class Feed:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.in_flight: dict[str, RequestRecord] = {}
        self.recent: deque[RequestRecord] = deque(maxlen=RECENT)  # shown as rows on demand
        self.minutes: deque[Minute] = deque(maxlen=MINUTES)
        self.sessions: dict[str, Today] = {}
        self.users: dict[str, Today] = {}
        self.day = time.strftime("%Y-%m-%d", time.gmtime(clock()))
        self._day_ends = _next_midnight(clock())  # formatting the day each request costs 7 µs
        self.watchers: set[asyncio.Queue[dict[str, Any]]] = set()

    @property
    def watching(self) -> bool:
        return bool(self.watchers)

    def started(self, record: RequestRecord) -> None:
        if record.path == "/v1/messages":
            self.in_flight[record.request_id] = record

    def finished(self, record: RequestRecord) -> None:
        if self.in_flight.pop(record.request_id, None) is None:
            return
        now = self.clock()
        self._roll_day(now)
        minute = self._minute(now)
        minute.statuses[str(record.status)] += 1
        if record.ttft_ms is not None:
            minute.ttfts.append(record.ttft_ms)
        output = record.output_tokens or 0
        if output and record.ttft_ms is not None:
            minute.output_tokens += output
            minute.stream_seconds += max(0.001, (record.latency_ms - record.ttft_ms) / 1000)
        if record.provider:
            total = (record.input_tokens or 0) + output
            minute.tokens_by_provider[record.provider] += total
        for totals in self._totals_of(record):
            _add(totals, record)
        self.recent.append(record)
        if self.watchers:
            self.publish({"type": "request", "row": row(record)})

    def publish(self, event: dict[str, Any]) -> None:
        for queue in self.watchers:
            if queue.full():  # a dashboard that stopped reading: drop its oldest event
                queue.get_nowait()
            queue.put_nowait(event)

    def watch(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.watchers.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.watchers.discard(queue)

    def chart(self) -> list[dict[str, Any]]:
        cutoff = self.clock() - MINUTES * 60
        return [m.point() for m in self.minutes if m.start >= cutoff]

    def running(self) -> list[dict[str, Any]]:
        return [row(r) for r in self.in_flight.values()]

    def finished_rows(self) -> list[dict[str, Any]]:
        return [row(r) for r in self.recent]

    def today(self) -> dict[str, Any]:
        self._roll_day(self.clock())
        return {
            "day": self.day,
            "sessions": {k: _public(v) for k, v in _largest(self.sessions)},
            "users": {k: _public(v) for k, v in _largest(self.users)},
        }

    def session(self, session_id: str) -> Today | None:
        self._roll_day(self.clock())
        return self.sessions.get(session_id)

    def _totals_of(self, record: RequestRecord) -> Iterator[Today]:
        if record.session:
            yield self.sessions.setdefault(record.session, Today(user=record.user))
        if record.user:
            yield self.users.setdefault(record.user, Today())

    def _minute(self, now: float) -> Minute:
        start = now - now % 60
        if not self.minutes or self.minutes[-1].start != start:
            self.minutes.append(Minute(start))
        return self.minutes[-1]

    def _roll_day(self, now: float) -> None:
        if now < self._day_ends:
            return
        self._day_ends = _next_midnight(now)
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if day != self.day:
            self.day = day
            self.sessions.clear()
            self.users.clear()


def _next_midnight(now: float) -> float:
    """The next UTC midnight after `now` (a day's totals start over then)."""
    return now - now % 86_400 + 86_400


def _add(totals: Today, record: RequestRecord) -> None:
    totals.requests += 1
    totals.input_tokens += record.input_tokens or 0
    totals.cached_tokens += record.cached_tokens or 0
    totals.output_tokens += record.output_tokens or 0
    totals.cost_usd += record.cost_usd or 0.0
    if record.provider:
        totals.provider, totals.model, totals.key = record.provider, record.model_used, record.key
        totals.context_tokens = record.context_tokens or totals.context_tokens
        totals.context_window = record.context_window or totals.context_window


def _public(totals: Today) -> dict[str, Any]:
    return {
        "requests": totals.requests,
        "input_tokens": totals.input_tokens,
        "cached_tokens": totals.cached_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": round(totals.cost_usd, 6),
        "provider": totals.provider,
        "model": totals.model,
    }


def _largest(totals: dict[str, Today], keep: int = 50) -> list[tuple[str, Today]]:
    return sorted(totals.items(), key=lambda kv: -kv[1].cost_usd - kv[1].requests * 1e-9)[:keep]
