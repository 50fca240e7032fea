"""Sliding-window budgets: the admission rule of the gateway's limits, pure. The clock (in
milliseconds) is an argument; `limits.lua` is the same rule, line for line, run inside Redis so
that every instance shares it, and one test suite holds both to the same answers.

Why a sliding log, not GCRA or fixed windows: a limit of N a minute must mean *at most N in any
60 seconds* — what the scripted providers in the tests (and real ones) count — while a user who
has been idle gets all N at once. A fixed window admits 2N across its edge; GCRA (a token
bucket) with a burst of N admits N at once and then N more during the minute. The log keeps one
entry per request in the window (for RPM at most N entries), so the price is memory per request,
not accuracy.

An entry is a request's reservation: 1 for a requests window; its input estimate and answer
budget for a tokens window, settled to the real usage when it ends; its worst-case cost for a
dollars window (micro-dollars), settled to the real cost. While another request of the same
subject runs, a tokens or dollars entry reserves the prompt's bound instead of its estimate (the
most tokens its bytes can be): a burst of requests whose text is crafted to be counted low by
the estimate cannot all be admitted on it; only one request at a time can overshoot.

A dollars budget is a calendar one (a UTC day, a month): its window is named after the period
("dollars on 2026-12-06"), so a new period is a new, empty window, and its entries never age
out within the period. Concurrent streams are leases: each expires unless its instance renews
it, so a dead instance's streams free themselves.
"""

from __future__ import annotations

import calendar
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

MINUTE_MS = 60_000
DAY_MS = 86_400_000
PERIOD_SPAN_MS = 32 * DAY_MS  # a calendar window's entries outlive its period
MICRO = 1_000_000  # dollars windows count micro-dollars
NEVER = -1  # a refusal's `at` when the request can never fit (larger than the limit)
CONCURRENCY_RETRY_MS = 1_000  # a stream of the subject's may have ended by then


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One limit: `limit` units of `kind` ("requests" or "tokens") per `span_ms`."""

    name: str  # "requests a minute": what a refusal names
    kind: str  # "requests" | "tokens" | "usd"
    span_ms: int
    limit: int


@dataclass(slots=True)
class SlidingLog:
    """What was taken in the last `span_ms`, entry by entry, oldest first."""

    span_ms: int
    kind: str
    entries: OrderedDict[str, list[int]] = field(default_factory=OrderedDict)  # id: [at, amount]
    total: int = 0

    def prune(self, now: int) -> None:
        while self.entries:
            at, amount = next(iter(self.entries.values()))
            if at > now - self.span_ms:
                return
            self.entries.popitem(last=False)
            self.total -= amount

    def fits_at(self, amount: int, limit: int, now: int) -> int | None:
        """None when `amount` fits now; else when it will (ms), or NEVER."""
        self.prune(now)
        if amount > limit:
            return NEVER
        excess = self.total + amount - limit
        if excess <= 0:
            return None
        for at, taken in self.entries.values():
            excess -= taken
            if excess <= 0:
                return at + self.span_ms
        return NEVER  # unreachable: the entries sum to the total

    def take(self, ident: str, amount: int, now: int) -> None:
        self.entries[ident] = [now, amount]
        self.total += amount

    def settle(self, ident: str, used: int) -> None:
        entry = self.entries.get(ident)
        if entry is not None:
            self.total += used - entry[1]
            entry[1] = used

    def give_back(self, ident: str) -> None:
        entry = self.entries.pop(ident, None)
        if entry is not None:
            self.total -= entry[1]


@dataclass(frozen=True, slots=True)
class Claim:
    """What one request asks of one subject (a user, a provider key): `tokens` on each of its
    windows, and a lease when its streams at once are limited."""

    subject: str
    windows: tuple[WindowSpec, ...]
    tokens: int
    concurrency: int | None = None
    usd: int = 0  # the worst case the request may cost, in micro-dollars
    #: Taken instead of `tokens` and `usd` while another request of the subject's runs: the
    #: prompt at the most tokens its bytes can be (text crafted to under-count the estimate
    #: then overshoots by one request, never by a burst of them). 0: as `tokens`, `usd`.
    bound_tokens: int = 0
    bound_usd: int = 0


@dataclass(frozen=True, slots=True)
class Admitted:
    pass


@dataclass(frozen=True, slots=True)
class Refused:
    """`limit` is the window's name, or "concurrent streams", of `subject`; retry in
    `after_ms`, or NEVER."""

    subject: str
    limit: str
    after_ms: int
    #: What the window held (a dollars budget's refusal says what was spent).
    used: int = field(default=0, compare=False)


Decision = Admitted | Refused
CONCURRENCY = "concurrent streams"


@dataclass(slots=True)
class Allowance:
    """One subject's budget: its windows and its leased streams."""

    logs: dict[str, SlidingLog] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)  # id: expiry (ms)

    def check(self, claim: Claim, now: int) -> Refused | None:
        if claim.concurrency:
            self.leases = {k: v for k, v in self.leases.items() if v > now}
            if len(self.leases) >= claim.concurrency:
                return Refused(claim.subject, CONCURRENCY, CONCURRENCY_RETRY_MS)
        busy = bool(claim.concurrency and self.leases)
        for spec in claim.windows:
            log = self.logs.setdefault(spec.name, SlidingLog(spec.span_ms, spec.kind))
            log.span_ms = spec.span_ms
            at = log.fits_at(amount(spec, claim, busy), spec.limit, now)
            if at is not None:
                after = NEVER if at == NEVER else at - now
                return Refused(claim.subject, spec.name, after, log.total)
        return None

    def take(self, ident: str, claim: Claim, lease_ms: int, now: int) -> None:
        busy = bool(claim.concurrency and self.leases)  # as `check` saw them
        for spec in claim.windows:
            self.logs[spec.name].take(ident, amount(spec, claim, busy), now)
        if claim.concurrency:
            self.leases[ident] = now + lease_ms

    def settle(
        self,
        ident: str,
        used_tokens: int | None,
        *,
        give_back: bool = False,
        used_usd: int | None = None,
    ) -> None:
        """The request ended: tokens windows spend `used_tokens`, dollars windows `used_usd`
        (None: its reservation); `give_back` returns everything (it never reached a provider).
        Its lease ends."""
        self.leases.pop(ident, None)
        for log in self.logs.values():
            if give_back:
                log.give_back(ident)
            elif used_tokens is not None and log.kind == "tokens":
                log.settle(ident, used_tokens)
            elif used_usd is not None and log.kind == "usd":
                log.settle(ident, used_usd)

    def renew(self, idents: list[str], lease_ms: int, now: int) -> None:
        for ident in idents:
            if ident in self.leases:
                self.leases[ident] = now + lease_ms


@dataclass(slots=True)
class Allowances:
    """Every subject's budget in one process."""

    subjects: dict[str, Allowance] = field(default_factory=dict)

    def admit(self, ident: str, claims: tuple[Claim, ...], lease_ms: int, now: int) -> Decision:
        """Take every claim of one request, or none: the first refusal says why."""
        for claim in claims:
            refused = self.subjects.setdefault(claim.subject, Allowance()).check(claim, now)
            if refused is not None:
                return refused
        for claim in claims:
            self.subjects[claim.subject].take(ident, claim, lease_ms, now)
        return Admitted()

    def settle(
        self,
        ident: str,
        claims: tuple[Claim, ...],
        used_tokens: int | None,
        *,
        give_back: bool = False,
        used_usd: int | None = None,
    ) -> None:
        for claim in claims:
            allowance = self.subjects.get(claim.subject)
            if allowance is not None:
                allowance.settle(ident, used_tokens, give_back=give_back, used_usd=used_usd)


def amount(spec: WindowSpec, claim: Claim, busy: bool = False) -> int:
    """What `claim` takes of a window; `busy`: another request of its subject is running."""
    if spec.kind == "requests":
        return 1
    if spec.kind == "usd":
        return max(claim.usd, claim.bound_usd) if busy else claim.usd
    return max(claim.tokens, claim.bound_tokens) if busy else claim.tokens


def windows_of(
    rpm: int | None,
    tpm: int | None,
    daily_tokens: int | None,
    share: int = 1,
    *,
    daily_usd: float | None = None,
    monthly_usd: float | None = None,
    wall_ms: int = 0,
) -> tuple[WindowSpec, ...]:
    """The windows of a subject's limits; `share` instances each take 1/share (rounded up):
    what one instance may admit alone when the shared store is unreachable. Dollars budgets
    are for the UTC day and month of `wall_ms`."""
    specs = [
        ("requests a minute", "requests", MINUTE_MS, rpm),
        ("tokens a minute", "tokens", MINUTE_MS, tpm),
        ("tokens a day", "tokens", DAY_MS, daily_tokens),
    ]
    windows = [
        WindowSpec(name, kind, span, -(-limit // share))
        for name, kind, span, limit in specs
        if limit
    ]
    day = datetime.fromtimestamp(wall_ms / 1000, UTC)
    for name, dollars in (
        (f"dollars on {day:%Y-%m-%d}", daily_usd),
        (f"dollars in {day:%Y-%m}", monthly_usd),
    ):
        if dollars:
            limit = -(-round(dollars * MICRO) // share)
            windows.append(WindowSpec(name, "usd", PERIOD_SPAN_MS, limit))
    return tuple(windows)


def period_end(window: str, wall_ms: int) -> datetime:
    """When a dollars window's period ends: the next UTC midnight, or the next month's 1st."""
    now = datetime.fromtimestamp(wall_ms / 1000, UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if window.startswith("dollars on "):
        return datetime.fromtimestamp(start.timestamp() + 86_400, UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    return datetime.fromtimestamp(start.replace(day=1).timestamp() + days * 86_400, UTC)
