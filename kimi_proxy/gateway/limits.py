"""Each user's limits — requests and tokens a minute, tokens a day, streams at once — admitted
on a `LimitStore` (`store.py`): Redis when the gateway has one, shared by every instance; this
process otherwise. A request reserves its input estimate and answer budget, and its grant is
settled to the real usage when it ends. An RPM of N admits N requests at once from a user who
has been idle (`window.py`).

With Redis, the user's claim rides with the first provider key's (`UserAsk`, taken by
`key_budgets.py`): one round trip checks and reserves both. Settlements are queued and sent
together (`Settler`): one pipeline per batch, off the request's path.

When Redis does not answer, the policy decides: `fail_open` admits on this process's share of
each limit (the limit divided among the instances last seen alive), `fail_closed` refuses with
a 503. A refused request is a 429 with `retry-after` that names the user's own limit — not a
provider's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from kimi_proxy.config.gateway import DEFAULT_COUNT_TOKENS_PER_MINUTE, DEFAULT_USER_CONCURRENCY
from kimi_proxy.errors import (
    BillingError,
    InvalidRequestError,
    ProxyError,
    RateLimitError,
    SharedStoreDownError,
)

from .link import RedisLink
from .store import LimitStore, MemoryStore, Settlement
from .users import Team, User, UserLimits
from .window import (
    CONCURRENCY,
    MICRO,
    MINUTE_MS,
    NEVER,
    Claim,
    Refused,
    WindowSpec,
    period_end,
    windows_of,
)

log = logging.getLogger("kimi_proxy.gateway")
LOCAL_LEASE_MS = 3_600_000  # in this process a stream's end always releases its lease
TOKEN_COUNTS = "token counts a minute"  # the window of `count_tokens` requests


@dataclass(frozen=True, slots=True)
class Need:
    """What a request asks of its user's budget: its prompt estimate and answer budget, and the
    most it can cost; and both again with the prompt at its bound (the most tokens its bytes
    can be), reserved while another of the user's requests runs."""

    tokens: int
    usd: float = 0.0
    bound_tokens: int = 0
    bound_usd: float = 0.0


@dataclass(slots=True)
class Settler:
    """Settlements waiting to be sent, by store; one task sends each store's as one batch."""

    waiting: dict[int, tuple[LimitStore, list[Settlement]]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def put(self, store: LimitStore, settlement: Settlement) -> None:
        self.waiting.setdefault(id(store), (store, []))[1].append(settlement)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self.waiting:
            batches, self.waiting = self.waiting, {}
            for store, settlements in batches.values():
                try:
                    await store.settle_many(settlements)
                except (RedisError, OSError) as exc:  # leases expire, windows age out
                    log.debug("settling %d requests failed: %s", len(settlements), exc)

    async def drain(self) -> None:
        while self.task is not None and not self.task.done():
            await asyncio.shield(self.task)


@dataclass(slots=True)
class Grant:
    """What one admitted request holds of its user's budget (and its team's) until it ends
    (exactly once)."""

    limiter: UserLimiter
    store: LimitStore
    ident: str
    claims: tuple[Claim, ...]
    done: bool = False

    def end(self, used_tokens: int | None, cost_usd: float | None = None) -> None:
        """Settle to what the request used, and what it cost (None: keep the reservation)."""
        if self.done:
            return
        self.done = True
        for claim in self.claims:
            self.limiter.open.pop((claim.subject, self.ident), None)
        used_usd = None if cost_usd is None else round(cost_usd * MICRO)
        settlement = Settlement(self.ident, self.claims, used_tokens, used_usd=used_usd)
        self.limiter.settler.put(self.store, settlement)


@dataclass(slots=True)
class UserAsk:
    """A user's claim waiting to ride with the first provider key's (one round trip); once
    taken, `grant` holds it."""

    limiter: UserLimiter
    user: User
    need: Need
    claims: tuple[Claim, ...]  # the user's, and the team's
    grant: Grant | None = None

    def taken(self, store: LimitStore, ident: str) -> None:
        self.grant = self.limiter.hold(store, ident, self.claims)

    async def take_alone(self) -> None:
        """Taken on its own (the key's turn is far off, or Redis stopped answering)."""
        self.grant = await self.limiter.admit(self.user, self.need)

    def end(self, used_tokens: int | None, cost_usd: float | None = None) -> None:
        if self.grant is not None:
            self.grant.end(used_tokens, cost_usd)


@dataclass(slots=True)
class UserLimiter:
    link: RedisLink | None = None
    local: MemoryStore = field(default_factory=MemoryStore)
    open: dict[tuple[str, str], LimitStore] = field(default_factory=dict)  # grants not ended
    settler: Settler = field(default_factory=Settler)
    #: A refusal whose limit resets within this many seconds (the routes' `max_wait_s`) is
    #: retried by the client; a longer one is final: the person reads it at once.
    patience: float = 20.0
    #: Streams at once for a user with no concurrency limit of their own (`[gateway]`).
    default_concurrency: int = DEFAULT_USER_CONCURRENCY
    #: `count_tokens` requests a minute per user (`[gateway] count_tokens_per_minute`).
    counts_per_minute: int = DEFAULT_COUNT_TOKENS_PER_MINUTE
    #: A user's team, by name (the gateway's user directory).
    teams: Callable[[str | None], Team | None] = field(default=lambda name: None)
    #: The wall clock (seconds): dollars budgets are for the UTC day and month.
    clock: Callable[[], float] = time.time

    def concurrency(self, user: User) -> int:
        return user.limits.concurrency or self.default_concurrency

    def claims(self, user: User, need: Need, share: int = 1) -> tuple[Claim, ...]:
        """The user's claim, then the team's when the user has one."""
        usd, bound_usd = math.ceil(need.usd * MICRO), math.ceil(need.bound_usd * MICRO)
        wall_ms = int(self.clock() * 1000)

        def claim(subject: str, limits: UserLimits, concurrency: int | None) -> Claim:
            windows = _windows(limits, share, wall_ms)
            at_once = -(-concurrency // share) if concurrency else None
            return Claim(subject, windows, need.tokens, at_once, usd, need.bound_tokens, bound_usd)

        own = claim(f"user:{user.name}", user.limits, self.concurrency(user))
        team = self.teams(user.team)
        if team is None:
            return (own,)
        return own, claim(f"team:{team.name}", team.limits, team.limits.concurrency)

    def ask(self, user: User, need: Need) -> UserAsk:
        return UserAsk(self, user, need, self.claims(user, need))

    async def admit(self, user: User, need: Need) -> Grant:
        """Reserve what the request needs of the user's budget (and the team's), or raise the
        429 (400, 503) saying why."""
        store, ident, claims = await self._decide(
            user, lambda share: self.claims(user, need, share)
        )
        return self.hold(store, ident, claims)

    async def admit_count(self, user: User) -> None:
        """A `count_tokens` request: at most `counts_per_minute` a minute a user. It reaches no
        provider, so nothing is held or settled."""
        limit = self.counts_per_minute

        def claims(share: int) -> tuple[Claim, ...]:
            window = WindowSpec(TOKEN_COUNTS, "requests", MINUTE_MS, -(-limit // share))
            return (Claim(f"user:{user.name}", (window,), 0),)

        await self._decide(user, claims)

    async def _decide(
        self, user: User, claims_at: Callable[[int], tuple[Claim, ...]]
    ) -> tuple[LimitStore, str, tuple[Claim, ...]]:
        """Admit the claims `claims_at(share)` on Redis, else on this process's share of them
        as the policy says; the store and request id that hold them, or the refusal raised."""
        ident = secrets.token_hex(8)
        link = self.link
        if link is not None and link.up:
            claims = claims_at(1)
            try:
                decision = await link.store.admit(ident, claims, link.lease_ms)
            except (RedisError, OSError) as exc:
                link.mark_down(exc)
            else:
                if isinstance(decision, Refused):
                    raise self.refused(user, decision)
                return link.store, ident, claims
        if link is not None and link.fail_closed:
            raise SharedStoreDownError(link.down_message())
        share = 1
        if link is not None:
            link.note_fallback()
            share = link.instances
        claims = claims_at(share)
        decision = await self.local.admit(ident, claims, LOCAL_LEASE_MS)
        if isinstance(decision, Refused):
            raise self.refused(user, decision)
        return self.local, ident, claims

    def refused(self, user: User, decision: Refused) -> ProxyError:
        if decision.limit == TOKEN_COUNTS:
            return RateLimitError(
                f"User {user.name!r} has asked for {self.counts_per_minute} token counts in the "
                "last minute, the gateway's limit ([gateway] count_tokens_per_minute); retry in "
                f"{_duration(decision.after_ms / 1000)}.",
                retry_after=decision.after_ms / 1000,
            )
        team = self.teams(user.team)
        if team is not None and decision.subject != f"team:{team.name}":
            team = None  # the user's own limit refused it
        if decision.limit.startswith("dollars "):
            limits = team.limits if team is not None else user.limits
            who = f'team "{team.name}"' if team is not None else f"user {user.name!r}"
            daily = decision.limit.startswith("dollars on ")
            budget = (limits.daily_usd if daily else limits.monthly_usd) or 0.0
            return budget_refusal(who, decision, int(self.clock() * 1000), budget)
        if team is not None:
            return team_refusal(team, decision, self.patience)
        return refusal(user, decision, self.patience, self.concurrency(user))

    async def spent(self, windows: list[tuple[str, str]]) -> list[int]:
        """What each (subject, window) holds now (micro-dollars for a dollars window): Redis's
        when the gateway has it, else this process's."""
        link = self.link
        if link is not None and link.up:
            try:
                return await link.store.held(windows)
            except (RedisError, OSError):
                pass
        return await self.local.held(windows)

    def hold(self, store: LimitStore, ident: str, claims: tuple[Claim, ...]) -> Grant:
        for claim in claims:
            self.open[(claim.subject, ident)] = store
        return Grant(self, store, ident, claims)

    def shared_leases(self) -> list[tuple[str, str]]:
        """This instance's open grants on Redis: their leases are renewed while they run."""
        return [pair for pair, store in self.open.items() if store is not self.local]


def refusal(
    user: User, refused: Refused, patience: float = 20.0, concurrency: int | None = None
) -> InvalidRequestError | RateLimitError:
    """Why `user` is refused, for them to read: which limit, when it resets, whom to ask."""
    if refused.after_ms == NEVER:
        return InvalidRequestError(
            f"This request is larger than user {user.name!r}'s limit of {refused.limit} "
            f"({user.limits.describe()}). Ask for a smaller answer budget (max_tokens) or a "
            "higher limit (kimi-proxy users limits)."
        )
    wait = refused.after_ms / 1000
    if refused.limit == CONCURRENCY:
        return RateLimitError(
            f"User {user.name!r} already has {concurrency or user.limits.concurrency} requests "
            "running, the user's limit of concurrent streams; retry when one ends.",
            retry_after=wait,
        )
    return RateLimitError(
        f"User {user.name!r}'s limit is reached: {refused.limit} "
        f"({user.limits.describe()}); room again in {_duration(wait)}. This is your own "
        "limit on this gateway, not the provider's: ask your team lead to raise it "
        "(kimi-proxy users limits).",
        retry_after=wait,
        final=wait > patience,
    )


def _windows(limits: UserLimits, share: int, wall_ms: int) -> tuple[WindowSpec, ...]:
    return windows_of(
        limits.rpm,
        limits.tpm,
        limits.daily_tokens,
        share,
        daily_usd=limits.daily_usd,
        monthly_usd=limits.monthly_usd,
        wall_ms=wall_ms,
    )


def budget_refusal(who: str, refused: Refused, wall_ms: int, budget: float) -> BillingError:
    """A spent dollars budget: a 402 that names it, what was spent, and when it resets."""
    daily = refused.limit.startswith("dollars on ")
    resets = period_end(refused.limit, wall_ms)
    wait = resets.timestamp() - wall_ms / 1000
    when = "00:00 UTC" if daily else f"{resets:%Y-%m-%d} 00:00 UTC"
    spent = refused.used / MICRO
    return BillingError(
        f"The {'daily' if daily else 'monthly'} budget of {who}, ${budget:,.2f}: ${spent:,.2f} "
        f"is spent, and this request could cost more than the ${max(0.0, budget - spent):,.2f} "
        f"left (its prompt and whole answer budget at the model's prices). It resets at {when}, "
        f"in {_duration(wait)}. Ask your team lead to raise it (kimi-proxy users limits "
        "--daily-usd / --monthly-usd), or ask for a smaller answer (max_tokens)."
    )


def team_refusal(
    team: Team, refused: Refused, patience: float
) -> InvalidRequestError | RateLimitError:
    """Why a member of `team` is refused by the team's own limits."""
    limits = team.limits.describe()
    if refused.after_ms == NEVER:
        return InvalidRequestError(
            f'This request is larger than team "{team.name}"\'s limit of {refused.limit} '
            f"({limits}). Ask for a smaller answer budget (max_tokens) or a higher team limit "
            "(kimi-proxy teams limits)."
        )
    wait = refused.after_ms / 1000
    if refused.limit == CONCURRENCY:
        return RateLimitError(
            f'team "{team.name}": {team.limits.concurrency} requests running, the team\'s '
            "limit of concurrent streams; retry when one ends.",
            retry_after=wait,
        )
    return RateLimitError(
        f'team "{team.name}": its limit of {refused.limit} is reached ({limits}); room again '
        f"in {_duration(wait)}. This is your team's limit on this gateway, shared by its "
        "members: ask your team lead to raise it (kimi-proxy teams limits).",
        retry_after=wait,
        final=wait > patience,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
