"""Each user's limits — requests and tokens a minute, tokens a day, streams at once — admitted
on a `LimitStore` (`store.py`): Redis when the gateway has one, shared by every instance; this
process otherwise. A request reserves its input estimate and answer budget, and its grant is
settled to the real usage when it ends (or gives everything back when it never reached a
provider). An RPM of N admits N requests at once from a user who has been idle (`window.py`).

When Redis does not answer, the policy decides: `fail_open` admits on this process's share of
each limit (the limit divided among the instances last seen alive), `fail_closed` refuses with
a 503. A refused request is a 429 with `retry-after` that names the user's own limit — not a
provider's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from ..errors import InvalidRequestError, RateLimitError, SharedStoreDownError
from .link import RedisLink
from .store import LimitStore, MemoryStore
from .users import User
from .window import CONCURRENCY, NEVER, Refused, WindowSpec, windows_of

log = logging.getLogger("kimi_proxy.gateway")
LOCAL_LEASE_MS = 3_600_000  # in this process a stream's end always releases its lease


@dataclass(slots=True)
class Grant:
    """What one admitted request holds of its user's budget until it ends (exactly once)."""

    limiter: UserLimiter
    store: LimitStore
    subject: str
    ident: str
    windows: tuple[WindowSpec, ...]
    done: bool = False

    def end(self, used_tokens: int | None, *, give_back: bool = False) -> None:
        if self.done:
            return
        self.done = True
        self.limiter.open.pop((self.subject, self.ident), None)
        self.limiter.spawn(
            self.store.settle(
                self.subject, self.ident, self.windows, used_tokens, give_back=give_back
            )
        )


@dataclass(slots=True)
class UserLimiter:
    link: RedisLink | None = None
    local: MemoryStore = field(default_factory=MemoryStore)
    open: dict[tuple[str, str], LimitStore] = field(default_factory=dict)  # grants not ended
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def admit(self, user: User, need_tokens: int) -> Grant:
        """Reserve `need_tokens` of the user's budget, or raise the 429 (400, 503) saying why."""
        limits = user.limits
        subject, ident = f"user:{user.name}", secrets.token_hex(8)
        link = self.link
        if link is not None and link.up:
            windows = windows_of(limits.rpm, limits.tpm, limits.daily_tokens)
            try:
                decision = await link.store.admit(
                    subject, ident, windows, need_tokens, limits.concurrency, link.lease_ms
                )
            except (RedisError, OSError) as exc:
                link.mark_down(exc)
            else:
                return self._granted(decision, link.store, subject, ident, windows, user)
        if link is not None and link.fail_closed:
            raise SharedStoreDownError(link.down_message())
        share = link.instances if link is not None else 1
        if link is not None:
            link.note_fallback()
        windows = windows_of(limits.rpm, limits.tpm, limits.daily_tokens, share)
        concurrency = -(-limits.concurrency // share) if limits.concurrency else None
        decision = await self.local.admit(
            subject, ident, windows, need_tokens, concurrency, LOCAL_LEASE_MS
        )
        return self._granted(decision, self.local, subject, ident, windows, user)

    def _granted(
        self,
        decision: object,
        store: LimitStore,
        subject: str,
        ident: str,
        windows: tuple[WindowSpec, ...],
        user: User,
    ) -> Grant:
        if isinstance(decision, Refused):
            raise refusal(user, decision)
        self.open[(subject, ident)] = store
        return Grant(self, store, subject, ident, windows)

    def shared_leases(self) -> list[tuple[str, str]]:
        """This instance's open grants on Redis: their leases are renewed while they run."""
        return [pair for pair, store in self.open.items() if store is not self.local]

    def spawn(self, work: object) -> None:
        async def run() -> None:
            try:
                await work  # type: ignore[misc]
            except (RedisError, OSError) as exc:  # the lease expires on its own
                log.debug("settling a grant failed: %s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def refusal(user: User, refused: Refused) -> InvalidRequestError | RateLimitError:
    if refused.after_ms == NEVER:
        return InvalidRequestError(
            f"This request is larger than user {user.name!r}'s limit of {refused.limit} "
            f"({user.limits.describe()}). Ask for a smaller answer budget (max_tokens) or a "
            "higher limit (kimi-proxy users limits)."
        )
    wait = refused.after_ms / 1000
    if refused.limit == CONCURRENCY:
        return RateLimitError(
            f"User {user.name!r} already has {user.limits.concurrency} requests running, the "
            "user's limit of concurrent streams; retry when one ends.",
            retry_after=wait,
        )
    return RateLimitError(
        f"User {user.name!r}'s limit is reached: {refused.limit} "
        f"({user.limits.describe()}); room again in {wait:.0f} s. (This is your own limit on "
        "this gateway, not the provider's.)",
        retry_after=wait,
    )
