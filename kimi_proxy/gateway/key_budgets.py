"""The provider keys' budgets across a gateway's instances. Each instance still reads the
provider's own figures from its answers (`providers/budget.py`); what no instance can see alone
is what the others are sending right now. So every limit a key is known to have — configured,
or reported by the provider's headers — is also a sliding window in Redis (`store.py`), taken
before each attempt in one round trip and settled to the real usage at the end: together the
instances never send a key more than its limit in any window.

While Redis is down, each instance goes on with its own ledger alone (the provider's headers
still hold it back); the user limits carry the `fail_open` / `fail_closed` policy.
"""

from __future__ import annotations

import math

from redis.exceptions import RedisError

from ..providers.budget import KeyLedger
from ..providers.dialects import WINDOW_SECONDS
from ..providers.pool import KeyState
from .limits import UserLimiter
from .link import RedisLink
from .window import NEVER, Refused, WindowSpec

PER = {"minute": "a minute", "day": "a day"}


def key_windows(ledger: KeyLedger) -> tuple[WindowSpec, ...]:
    """The windows of a key whose limit is known."""
    return tuple(
        WindowSpec(f"{kind} {PER[window]}", kind, int(WINDOW_SECONDS[window] * 1000), budget.limit)
        for (kind, window), budget in ledger.windows.items()
        if budget.limit is not None and budget.limit > 0
    )


class SharedKeyBudgets:
    def __init__(self, link: RedisLink, limiter: UserLimiter) -> None:
        self.link = link
        self.limiter = limiter  # its task set settles in the background
        self.held: dict[str, tuple[str, tuple[WindowSpec, ...]]] = {}  # ident: subject, windows

    async def take(self, key: KeyState, need_tokens: int, ident: str) -> float | None:
        windows = key_windows(key.ledger)
        if not windows or not self.link.up:
            return None
        subject = f"key:{key.provider.name}:{key.key.name}"
        try:
            decision = await self.link.store.admit(
                subject, ident, windows, need_tokens, None, self.link.lease_ms
            )
        except (RedisError, OSError) as exc:
            self.link.mark_down(exc)
            return None
        if isinstance(decision, Refused):
            return math.inf if decision.after_ms == NEVER else decision.after_ms / 1000
        self.held[ident] = (subject, windows)
        return None

    def done(self, ident: str, used_tokens: int | None, *, give_back: bool = False) -> None:
        held = self.held.pop(ident, None)
        if held is not None:
            subject, windows = held
            self.limiter.spawn(
                self.link.store.settle(subject, ident, windows, used_tokens, give_back=give_back)
            )
