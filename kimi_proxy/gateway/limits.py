"""Each user's budget in this process: requests and tokens a minute, tokens a day, streams at
once. The arithmetic is the provider keys' (`providers.budget.KeyLedger` over counted windows):
a request reserves its input estimate and answer budget, and is settled to its real usage. An
RPM of N admits N requests at once from a user who has been idle.

A refused request is a 429 with `retry-after` that names the user's own limit — not a
provider's. Shared across instances, this belongs in Redis (issue 19); here it is one process.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import InvalidRequestError, RateLimitError
from ..providers.budget import Admit, KeyLedger, Never, Reservation
from .users import User, UserLimits

CONCURRENCY_RETRY = 1.0  # seconds: a stream of the user's may end by then


@dataclass(slots=True)
class Grant:
    """What one admitted request holds of its user's budget until it ends (exactly once)."""

    limiter: UserLimiter
    user: str
    reservation: Reservation
    done: bool = False

    def end(self, used_tokens: int | None) -> None:
        if self.done:
            return
        self.done = True
        ledger = self.limiter.ledgers.get(self.user)
        if ledger is not None:
            ledger.settle(self.reservation, used_tokens or self.reservation.tokens)
        self.limiter.running[self.user] -= 1


@dataclass(slots=True)
class UserLimiter:
    clock: Callable[[], float] = time.monotonic
    ledgers: dict[str, KeyLedger] = field(default_factory=dict)
    limits: dict[str, UserLimits] = field(default_factory=dict)
    running: Counter[str] = field(default_factory=Counter)

    def _ledger(self, user: User) -> KeyLedger:
        if self.limits.get(user.name) != user.limits or user.name not in self.ledgers:
            windows = [
                ("requests", "minute", user.limits.rpm),
                ("tokens", "minute", user.limits.tpm),
                ("tokens", "day", user.limits.daily_tokens),
            ]
            counted = [(k, w, n) for k, w, n in windows if n]
            self.ledgers[user.name] = KeyLedger.with_limits(counted, self.clock())  # type: ignore[arg-type]
            self.limits[user.name] = user.limits
        return self.ledgers[user.name]

    def admit(self, user: User, need_tokens: int) -> Grant:
        """Reserve `need_tokens` of the user's budget, or raise the 429 (or 400) saying why."""
        now = self.clock()
        concurrency = user.limits.concurrency
        if concurrency and self.running[user.name] >= concurrency:
            raise RateLimitError(
                f"User {user.name!r} already has {concurrency} requests running, the user's "
                "limit of concurrent streams; retry when one ends.",
                retry_after=CONCURRENCY_RETRY,
            )
        ledger = self._ledger(user)
        admission = ledger.admission(need_tokens, now)
        if isinstance(admission, Never):
            raise InvalidRequestError(
                f"This request ({need_tokens:,} tokens with its answer budget) is larger than "
                f"user {user.name!r}'s limit ({admission.reason}). Ask for a smaller answer "
                "budget (max_tokens) or a higher limit (kimi-proxy users limits)."
            )
        if not isinstance(admission, Admit):
            wait = max(0.0, admission.at - now)
            raise RateLimitError(
                f"User {user.name!r}'s limit is reached: {admission.reason}; it resets in "
                f"{wait:.0f} s. (This is your own limit on this gateway, not the provider's.)",
                retry_after=wait,
            )
        self.running[user.name] += 1
        return Grant(self, user.name, ledger.reserve(need_tokens, now))
