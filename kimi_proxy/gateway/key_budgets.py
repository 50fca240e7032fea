"""The provider keys' budgets across a gateway's instances. Each instance still reads the
provider's own figures from its answers (`providers/budget.py`); what no instance can see alone
is what the others are sending right now. So every limit a key is known to have — configured,
or reported by the provider's headers — is also a sliding window in Redis (`store.py`), taken
before each attempt and settled to the real usage at the end: together the instances never
send a key more than its limit in any window. The user's own claim rides along (`UserAsk`):
one Lua round trip checks and reserves the user's limits and the key's.

While Redis is down, each instance goes on with its own ledger alone (the provider's headers
still hold it back); the user's limits follow the `fail_open` / `fail_closed` policy.
"""

from __future__ import annotations

import math

from redis.exceptions import RedisError

from kimi_proxy.providers.budget import KeyLedger
from kimi_proxy.providers.dialects import WINDOW_SECONDS
from kimi_proxy.providers.pool import KeyState

from .limits import UserAsk, UserLimiter
from .link import RedisLink
from .store import Settlement
from .window import NEVER, Claim, Refused, WindowSpec

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
        self.limiter = limiter
        self.held: dict[str, Claim] = {}  # attempt id: the key's claim, until settled

    async def take(
        self, key: KeyState, need_tokens: int, ident: str, rider: object | None = None
    ) -> float | None:
        ask = rider if isinstance(rider, UserAsk) else None
        windows = key_windows(key.ledger)
        # The user's own claim first: when both are spent, the refusal names the user's limit.
        claims: list[Claim] = list(ask.claims) if ask is not None else []
        key_claim = None
        if windows:
            key_claim = Claim(f"key:{key.provider.name}:{key.key.name}", windows, need_tokens)
            claims.append(key_claim)
        if not claims:
            return None
        if self.link.up:
            try:
                decision = await self.link.store.admit(ident, tuple(claims), self.link.lease_ms)
            except (RedisError, OSError) as exc:
                self.link.mark_down(exc)
            else:
                if isinstance(decision, Refused):
                    if ask is not None and decision.subject in {c.subject for c in ask.claims}:
                        raise self.limiter.refused(ask.user, decision)
                    return math.inf if decision.after_ms == NEVER else decision.after_ms / 1000
                if key_claim is not None:
                    self.held[ident] = key_claim
                if ask is not None:
                    ask.taken(self.link.store, ident)
                return None
        if ask is not None:  # Redis is down: the user's limits by the policy, the key's alone
            await ask.take_alone()
        return None

    def done(self, ident: str, used_tokens: int | None, *, give_back: bool = False) -> None:
        claim = self.held.pop(ident, None)
        if claim is not None:
            settlement = Settlement(ident, (claim,), used_tokens, give_back)
            self.limiter.settler.put(self.link.store, settlement)
