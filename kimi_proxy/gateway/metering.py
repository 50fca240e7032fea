"""Usage metering: per day, user, session (`x-claude-code-session-id`), agent, provider and
model — requests, input/cached/output tokens, errors, and cost at the catalog's prices.

Each finished request adds to a tally in this process (`Meter.finished`, a watcher of the
observability middleware); the gateway's link flushes the tally into Redis every half second
as one MULTI/EXEC transaction of HINCRBYs on a hash per day (`{prefix}:usage:YYYY-MM-DD`,
expiring after the retention). A flush that fails is kept and retried, and a transaction
applies whole or not at all, so totals are exact. Cost is counted in nano-dollars (integers).

Reading (`kimi-proxy usage`) folds those hashes — or, without Redis, the JSON access log —
into rows by the dimensions asked for. Parsing and folding are pure.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from redis.asyncio import Redis

from kimi_proxy.protocol.record import LOGGED_FIELDS, RequestRecord

METERED_PATH = "/v1/messages"
ACCESS_LOGGER = "kimi_proxy.access"  # the logger whose lines `usage --access-log` reads
SEPARATOR = "\x1f"
DIMENSIONS = ("day", "user", "team", "session", "agent", "provider", "model")
METRICS = (
    *("requests", "input_tokens", "cached_tokens", "output_tokens", "errors", "cancelled"),
    *("web_searches", "cost_nusd"),
)
NANO = 1_000_000_000
COUNTED = tuple(m for m in METRICS if m != "cost_nusd")  # summed as they are


@dataclass(slots=True)
class UsageRow:
    """One row of a report: its dimensions ("-" when summed over), then its metrics."""

    day: str = "-"
    user: str = "-"
    session: str = "-"
    agent: str = "-"
    provider: str = "-"
    model: str = "-"
    team: str = "-"
    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    errors: int = 0
    cancelled: int = 0  # streams the client left before their end
    web_searches: int = 0  # run by the proxy for Anthropic's `web_search` tool
    cost_usd: float = 0.0

    def as_dict(self, by: tuple[str, ...]) -> dict[str, Any]:
        row = asdict(self)
        return {k: v for k, v in row.items() if k in by or k not in DIMENSIONS}


def _clean(value: str | None) -> str:
    return (value or "-").replace(SEPARATOR, " ")


def increments(record: RequestRecord) -> dict[str, int]:
    """What one finished request adds, by hash field (its dimensions and a metric). A request
    refused before reaching a provider is counted without its session and agent ids: those
    are the client's choice, and a refused client must not add rows."""
    served = record.provider is not None
    session, agent = (record.session, record.agent) if served else (None, None)
    dimensions = (record.user, session, agent, record.provider, record.model_used, record.team)
    base = SEPARATOR.join(_clean(v) for v in dimensions)
    counts = {
        "requests": 1,
        "input_tokens": record.input_tokens or 0,
        "cached_tokens": record.cached_tokens or 0,
        "output_tokens": record.output_tokens or 0,
        "errors": int(record.status >= 400 or record.error_type is not None),
        "cancelled": int(record.cancelled),
        "web_searches": record.web_searches,
        "cost_nusd": nano_dollars(record),
    }
    return {f"{base}{SEPARATOR}{metric}": n for metric, n in counts.items() if n}


def nano_dollars(record: RequestRecord) -> int:
    """A request's cost in whole nano-dollars: integers add up exactly (HINCRBY)."""
    return round((record.cost_usd or 0.0) * NANO)


def day_of(record: RequestRecord) -> str:
    return datetime.fromtimestamp(record.wall_start, UTC).date().isoformat()


class Meter:
    """The usage not yet in Redis, tallied by day and field."""

    def __init__(self, client: Redis, prefix: str, retention_days: int) -> None:
        self.client = client
        self.prefix = prefix
        self.retention_seconds = (retention_days + 1) * 86_400
        self.pending: Counter[tuple[str, str]] = Counter()

    def started(self, record: RequestRecord) -> None:
        pass

    def finished(self, record: RequestRecord) -> None:
        if record.path != METERED_PATH:
            return
        day = day_of(record)
        for name, n in increments(record).items():
            self.pending[(day, name)] += n

    async def flush(self) -> None:
        """Write the tally as one transaction; on failure it is kept for the next flush."""
        if not self.pending:
            return
        batch, self.pending = self.pending, Counter()
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                days = set()
                for (day, name), n in batch.items():
                    pipe.hincrby(f"{self.prefix}:usage:{day}", name, n)
                    days.add(day)
                for day in days:
                    pipe.expire(f"{self.prefix}:usage:{day}", self.retention_seconds)
                await pipe.execute()
        except BaseException:
            batch.update(self.pending)
            self.pending = batch
            raise


async def stored_rows(client: Redis, prefix: str, since: date, until: date) -> list[UsageRow]:
    """The rows Redis holds for the days from `since` to `until`, read in one round trip."""
    days = days_between(since, until)
    async with client.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(f"{prefix}:usage:{day}")
        hashes: list[dict[bytes, bytes]] = await pipe.execute()
    rows: list[UsageRow] = []
    for day, raw in zip(days, hashes, strict=True):
        rows += rows_from_fields(day, ((k.decode(), int(v)) for k, v in raw.items()))
    return rows


def rows_from_fields(day: str, values: Iterable[tuple[str, int]]) -> Iterator[UsageRow]:
    """A day's hash (field, count) as rows of one metric each."""
    for name, n in values:
        parts = name.split(SEPARATOR)
        if len(parts) == 6:  # written before teams: no team
            parts.insert(5, "-")
        if len(parts) != 7 or parts[6] not in METRICS:
            continue  # not ours: skip rather than fail the whole report
        user, session, agent, provider, model, team, metric = parts
        row = UsageRow(day, user, session, agent, provider, model, team)
        if metric == "cost_nusd":
            row.cost_usd = n / NANO
        else:
            setattr(row, metric, n)
        yield row


def rows_from_access_log(lines: Iterable[str]) -> Iterator[UsageRow]:
    """Rows from the access log's JSON lines: `<date> <time> INFO kimi_proxy.access {…}`, the
    JSON from the first `{`. Lines of any other logger are skipped, whatever they contain."""
    for line in lines:
        start = line.find("{")
        if start < 0 or line[:start].split()[2:] != ["INFO", ACCESS_LOGGER]:
            continue
        try:
            entry = orjson.loads(line[start:])
        except orjson.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or entry.get("path") != METERED_PATH:
            continue
        record = RequestRecord("", "POST", METERED_PATH)
        for name in LOGGED_FIELDS:  # what the access log line carries
            if name in entry:
                setattr(record, name, entry[name])
        record.wall_start = _line_time(line[:start])
        yield from rows_from_fields(day_of(record), increments(record).items())


def _line_time(prefix: str) -> float:
    """The time a log line starts with (`2026-12-04 18:29:59,123 …`), else now."""
    try:
        return datetime.strptime(prefix[:19], "%Y-%m-%d %H:%M:%S").timestamp()
    except ValueError:
        return datetime.now().timestamp()


def fold(
    rows: Iterable[UsageRow],
    by: tuple[str, ...],
    user: str | None,
    since: date | None,
    team: str | None = None,
) -> list[UsageRow]:
    """Rows summed over the dimensions not in `by`, filtered by user, team and first day."""
    totals: dict[tuple[str, ...], UsageRow] = {}
    for row in rows:
        if user is not None and row.user != user:
            continue
        if team is not None and row.team != team:
            continue
        if since is not None and row.day < since.isoformat():
            continue
        key = tuple(str(getattr(row, d)) if d in by else "-" for d in DIMENSIONS)
        total = totals.get(key)
        if total is None:
            total = totals[key] = UsageRow()
            for dimension, value in zip(DIMENSIONS, key, strict=True):
                setattr(total, dimension, value)
        for metric in COUNTED:
            setattr(total, metric, getattr(total, metric) + getattr(row, metric))
        total.cost_usd += row.cost_usd
    for total in totals.values():
        total.cost_usd = round(total.cost_usd, 6)
    return sorted(totals.values(), key=lambda r: tuple(getattr(r, d) for d in DIMENSIONS))


def render(rows: list[UsageRow], by: tuple[str, ...], form: str) -> str:
    dicts = [row.as_dict(by) for row in rows]
    columns = [*by, *(m for m in METRICS if m != "cost_nusd"), "cost_usd"]
    if form == "json":
        return orjson.dumps(dicts, option=orjson.OPT_INDENT_2).decode()
    if form == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(dicts)
        return out.getvalue().rstrip("\n")
    table = [columns] + [[_cell(d[c]) for c in columns] for d in dicts]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def week_before(today: date) -> date:
    """The first day a report (`usage`, `audit`) covers when none is given: today and the six
    days before it."""
    return today - timedelta(days=6)


def day_start(day: date) -> float:
    """Midnight UTC of `day`, as a timestamp."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def days_between(since: date, until: date) -> list[str]:
    return [(since + timedelta(days=n)).isoformat() for n in range((until - since).days + 1)]
