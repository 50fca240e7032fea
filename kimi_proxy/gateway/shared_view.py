"""One view behind a balancer: with Redis, every instance writes its finished requests (the
dashboard's last requests) and each session's totals today (what the status line shows), and
any instance answers from them — whichever instance served the request.

Writes are batched with the usage meter's flush (every half second, one transaction):
`{prefix}:recent` is a list of the last 100 rows, newest first; `{prefix}:session:{day}:{id}`
a hash of the session's counters today (HINCRBY; the day in UTC, as the instance's own feed
counts it) and its last request's provider, model, key and context, expiring two days after its
last request. Reading is one command. Folding a record into the pending changes, and a hash
back into totals, is pure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.protocol.totals import Today

from .metering import NANO, day_of, nano_dollars

RECENT = 100
SESSION_TTL_SECONDS = 2 * 86_400
COUNTERS = ("requests", "cost_nusd")  # what the status line shows of a session's day


@dataclass(slots=True)
class SessionDelta:
    """What this instance's finished requests add to one session since the last flush."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    last: dict[str, str] = field(default_factory=dict)  # the last request's provider, model…


def fold(delta: SessionDelta, record: RequestRecord) -> None:
    """Add one finished request to its session's pending change."""
    delta.counts["requests"] += 1
    delta.counts["cost_nusd"] += nano_dollars(record)
    if record.user:
        delta.last["user"] = record.user
    if record.provider:
        delta.last.update(
            provider=record.provider,
            model=record.model_used or "",
            key=record.key or "",
            context_window=str(record.context_window or 0),
        )
        if record.context_tokens:
            delta.last["context_tokens"] = str(record.context_tokens)


def session_totals(fields: dict[str, str]) -> Today | None:
    """A session's hash as its totals; None for a session nobody wrote."""
    if not fields:
        return None

    def number(name: str) -> int:
        try:
            return int(fields.get(name) or 0)
        except ValueError:
            return 0

    return Today(
        requests=number("requests"),
        cost_usd=number("cost_nusd") / NANO,
        provider=fields.get("provider"),
        model=fields.get("model"),
        key=fields.get("key"),
        user=fields.get("user"),
        context_tokens=number("context_tokens"),
        context_window=number("context_window"),
    )


class SharedView:
    """The dashboard's last requests and the sessions' totals, in Redis (a feed watcher)."""

    def __init__(
        self, client: Redis, prefix: str, row: Callable[[RequestRecord], dict[str, Any]]
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.row = row
        self.rows: list[bytes] = []
        self.sessions: dict[str, SessionDelta] = {}  # by `{day}:{session id}`

    def started(self, record: RequestRecord) -> None:
        pass

    def finished(self, record: RequestRecord) -> None:
        if record.path != "/v1/messages":
            return
        self.rows.append(orjson.dumps(self.row(record)))
        del self.rows[:-RECENT]
        if record.session:
            day_and_id = f"{day_of(record)}:{record.session}"
            fold(self.sessions.setdefault(day_and_id, SessionDelta()), record)

    async def flush(self) -> None:
        """Write what is pending as one transaction; on failure it is kept for the next."""
        if not self.rows and not self.sessions:
            return
        rows, sessions = self.rows, self.sessions
        self.rows, self.sessions = [], {}
        recent = f"{self.prefix}:recent"
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                if rows:
                    pipe.lpush(recent, *rows)
                    pipe.ltrim(recent, 0, RECENT - 1)
                for day_and_id, delta in sessions.items():
                    key = f"{self.prefix}:session:{day_and_id}"
                    for name, n in delta.counts.items():
                        if n:
                            pipe.hincrby(key, name, n)
                    if delta.last:
                        pipe.hset(key, mapping=delta.last)
                    pipe.expire(key, SESSION_TTL_SECONDS)
                await pipe.execute()
        except BaseException:
            self.rows = [*rows, *self.rows][-RECENT:]
            for day_and_id, delta in sessions.items():
                pending = self.sessions.setdefault(day_and_id, SessionDelta())
                for name, n in delta.counts.items():
                    pending.counts[name] += n
                pending.last = {**delta.last, **pending.last}
            raise

    async def recent(self) -> list[dict[str, Any]] | None:
        """The last requests of every instance, oldest first (as the dashboard lists them);
        None while Redis does not answer (the instance then shows its own)."""
        try:
            recent = self.client.lrange(f"{self.prefix}:recent", 0, RECENT - 1)
            raw = await cast("Awaitable[list[bytes]]", recent)
        except (RedisError, OSError):
            return None
        return [orjson.loads(item) for item in reversed(raw)]

    async def session(self, session_id: str) -> Today | None:
        """A session's totals today, whichever instance served it; None when no instance
        wrote it or Redis does not answer."""
        today = datetime.now(UTC).date().isoformat()
        try:
            session = self.client.hgetall(f"{self.prefix}:session:{today}:{session_id}")
            fields = await cast("Awaitable[dict[bytes, bytes]]", session)
        except (RedisError, OSError):
            return None
        return session_totals({_text(k): _text(v) for k, v in fields.items()})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
