"""The budget of one provider key, and whether a request fits it now. Pure: the clock is an
argument, nothing here does I/O.

A key has windows: requests and tokens, per minute and per day. Each window knows how many are
`remaining` until `resets_at`, either as the provider last reported it (`reported`, from its
headers) or as counted here from the configured `limits` when the provider sends none.

A request *reserves* its estimate before it is sent: 1 request, and its input estimate plus its
`max_tokens` (what Groq and Moonshot count at admission). What is reserved is not available to
others. When the provider's answer brings fresh headers, they already count the request, so its
reservation on the reported windows is dropped (`acknowledge`); on counted windows it stays
until the stream ends and is replaced by the real usage (`settle`). A request that fails before
the provider took it gives its reservation back (`release`). Each reservation ends exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .catalog import Window
from .dialects import WINDOW_SECONDS, Reported

WindowKey = tuple[str, Window]  # ("tokens", "minute")
RECHECK_SECONDS = 1.0  # blocked only by requests in flight: look again this soon
PROBE_SECONDS = 0.2  # a key's first request is out and its figures not back yet


@dataclass(slots=True)
class Budget:
    """One window of one key."""

    kind: str
    window: Window
    limit: int | None
    remaining: int | None
    resets_at: float
    reported: bool
    reserved: int = 0
    epoch: int = 0  # bumped when a counted window starts over

    def available(self, now: float) -> int | None:
        """What a new request may take now (None: no known bound)."""
        base = self.limit if now >= self.resets_at else self.remaining
        return None if base is None else base - self.reserved

    def roll(self, now: float) -> None:
        """A counted window whose time is up starts over, full."""
        if not self.reported and now >= self.resets_at:
            self.remaining = self.limit
            self.resets_at = now + WINDOW_SECONDS[self.window]
            self.epoch += 1

    def describe(self) -> str:
        per = "a minute" if self.window == "minute" else "a day"
        return f"{self.kind} {per}" + (f" (limit {self.limit:,})" if self.limit else "")


@dataclass(frozen=True, slots=True)
class Admit:
    pass


@dataclass(frozen=True, slots=True)
class WaitUntil:
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Never:
    reason: str


Admission = Admit | WaitUntil | Never


@dataclass(slots=True)
class Reservation:
    """What one request holds on one key's windows until it ends."""

    held: dict[WindowKey, tuple[int, int]] = field(default_factory=dict)  # amount, epoch
    tokens: int = 0
    probe: bool = False  # sent before the key's first answer

    @property
    def open(self) -> bool:
        return bool(self.held)


@dataclass(slots=True)
class KeyLedger:
    """The windows of one key, its cool-down, and the arithmetic over them."""

    windows: dict[WindowKey, Budget] = field(default_factory=dict)
    cooldown_until: float = 0.0
    cooldown_reason: str = ""
    #: Whether the provider has answered on this key yet (with or without figures). Until it
    #: has, one request at a time goes out: the key's limits are unknown.
    answered: bool = False
    probing: int = 0

    @classmethod
    def with_limits(cls, limits: Iterable[tuple[str, Window, int]], now: float) -> KeyLedger:
        """A ledger counting configured limits (used until the provider reports its own)."""
        ledger = cls()
        for kind, window, limit in limits:
            ledger.windows[(kind, window)] = Budget(
                kind, window, limit, limit, now + WINDOW_SECONDS[window], reported=False
            )
        return ledger

    def admission(self, need_tokens: int, now: float) -> Admission:
        """Whether a request of `need_tokens` may go now, when it may, or never."""
        waits: list[WaitUntil] = []
        if not self.answered and self.probing:
            waits.append(WaitUntil(now + PROBE_SECONDS, "waiting for the key's first figures"))
        if self.cooldown_until > now:
            waits.append(WaitUntil(self.cooldown_until, self.cooldown_reason or "cooling down"))
        for budget in self.windows.values():
            need = 1 if budget.kind == "requests" else need_tokens
            if budget.limit is not None and need > budget.limit:
                return Never(f"{need:,} {budget.kind} asked, over its {budget.describe()}")
            available = budget.available(now)
            if available is None or available >= need:
                continue
            if budget.resets_at > now and (
                budget.limit is None or budget.limit - budget.reserved >= need
            ):
                waits.append(WaitUntil(budget.resets_at, f"{budget.describe()} used up"))
            else:  # held by requests in flight: free when they end
                waits.append(
                    WaitUntil(
                        now + RECHECK_SECONDS, f"{budget.describe()} held by requests in flight"
                    )
                )
        if not waits:
            return Admit()
        return max(waits, key=lambda w: w.at)

    def available_tokens(self, now: float) -> int | None:
        values = [b.available(now) for b in self.windows.values() if b.kind == "tokens"]
        known = [v for v in values if v is not None]
        return min(known) if known else None

    def reserve(self, need_tokens: int, now: float) -> Reservation:
        reservation = Reservation(tokens=need_tokens, probe=not self.answered)
        self.probing += reservation.probe
        for key, budget in self.windows.items():
            budget.roll(now)
            amount = 1 if budget.kind == "requests" else need_tokens
            budget.reserved += amount
            reservation.held[key] = (amount, budget.epoch)
        return reservation

    def acknowledge(self, reservation: Reservation, reported: Iterable[Reported]) -> None:
        """Fresh figures from the provider's answer to `reservation`'s request."""
        self.answered = True
        self._end_probe(reservation)
        for report in reported:
            key = (report.kind, report.window)
            budget = self.windows.get(key)
            if budget is None or not budget.reported:
                budget = Budget(
                    report.kind,
                    report.window,
                    None,
                    None,
                    0.0,
                    reported=True,
                    reserved=budget.reserved if budget else 0,
                )
                self.windows[key] = budget
            budget.limit = report.limit if report.limit is not None else budget.limit
            budget.remaining = report.remaining
            budget.resets_at = report.resets_at
            held = reservation.held.pop(key, None)
            if held is not None:  # the provider has counted this request
                budget.reserved -= held[0]

    def _end_probe(self, reservation: Reservation) -> None:
        if reservation.probe:
            reservation.probe = False
            self.probing -= 1

    def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """The request ended having used `used_tokens`: counted windows spend it."""
        self._end_probe(reservation)
        for key, (amount, epoch) in reservation.held.items():
            budget = self.windows.get(key)
            if budget is None:
                continue
            budget.reserved -= amount
            if not budget.reported and budget.epoch == epoch and budget.remaining is not None:
                spent = 1 if budget.kind == "requests" else used_tokens
                budget.remaining = max(0, budget.remaining - spent)
        reservation.held.clear()

    def release(self, reservation: Reservation) -> None:
        """The request failed before the provider took it: nothing was spent."""
        self._end_probe(reservation)
        for key, (amount, _epoch) in reservation.held.items():
            budget = self.windows.get(key)
            if budget is not None:
                budget.reserved -= amount
        reservation.held.clear()

    def cool_down(self, until: float, reason: str) -> None:
        if until > self.cooldown_until:
            self.cooldown_until = until
            self.cooldown_reason = reason

    def cap_tokens_per_minute(self, limit: int, now: float) -> None:
        """The provider said one request may not exceed `limit` tokens a minute (Groq's 413)."""
        key: WindowKey = ("tokens", "minute")
        budget = self.windows.get(key)
        if budget is None:
            self.windows[key] = Budget("tokens", "minute", limit, limit, now + 60.0, reported=True)
        else:
            budget.limit = limit
