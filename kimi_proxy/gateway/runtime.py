"""The gateway as one instance runs it: who its users are, their limits, the usage meter, and
(with Redis) the link whose background work keeps them shared. `running()` is the part of the
app's lifespan: users are read before the first request, and usage is flushed at the end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimi_proxy.config.gateway import Gateway
from kimi_proxy.providers.pool import Pool

from .key_budgets import SharedKeyBudgets
from .limits import UserLimiter
from .link import RedisLink
from .metering import Meter
from .shared_view import SharedView
from .users import UserDirectory, UserFile, UserLimits
from .window import MICRO, windows_of


@dataclass(slots=True)
class GatewayRuntime:
    settings: Gateway | None
    users: UserDirectory | None
    limiter: UserLimiter
    link: RedisLink | None = None
    meter: Meter | None = None
    view: SharedView | None = None  # set by the server, which knows the rows it shows

    @classmethod
    def build(cls, gateway: Gateway | None, users_file: Path | None) -> GatewayRuntime:
        if gateway is None or gateway.redis_url is None:
            users = UserDirectory(UserFile(users_file)) if users_file else None
            limiter = UserLimiter()
            if gateway is not None:
                limiter.default_concurrency = gateway.user_concurrency
                limiter.counts_per_minute = gateway.count_tokens_per_minute
            if users is not None:
                limiter.teams = users.team
            return cls(gateway, users, limiter)
        link = RedisLink(gateway)
        meter = Meter(link.client, gateway.prefix, gateway.retention_days)
        limiter = UserLimiter(
            link,
            default_concurrency=gateway.user_concurrency,
            counts_per_minute=gateway.count_tokens_per_minute,
        )
        directory = UserDirectory(None)
        limiter.teams = directory.team
        return cls(gateway, directory, limiter, link, meter)

    async def budgets(self) -> list[dict[str, Any]]:
        """Each dollars budget of a user or team, and what is spent of it now (the
        dashboard's bars)."""
        if self.users is None:
            return []
        wall_ms = int(self.limiter.clock() * 1000)
        holders: list[tuple[str, str, UserLimits]] = [
            ("user", u.name, u.limits) for u in self.users.everyone()
        ]
        holders += [("team", t.name, t.limits) for t in self.users.teams.values()]
        budgets = [
            (f"{kind}:{name}", f"{kind} {name}", spec)
            for kind, name, limits in holders
            for spec in windows_of(
                None,
                None,
                None,
                daily_usd=limits.daily_usd,
                monthly_usd=limits.monthly_usd,
                wall_ms=wall_ms,
            )
        ]
        spent = await self.limiter.spent([(subject, spec.name) for subject, _, spec in budgets])
        return [
            {
                "who": who,
                "budget": "daily" if spec.name.startswith("dollars on") else "monthly",
                "limit_usd": spec.limit / MICRO,
                "spent_usd": round(held / MICRO, 6),
            }
            for (_, who, spec), held in zip(budgets, spent, strict=True)
        ]

    def share_keys(self, pool: Pool) -> None:
        """With Redis, the pool's keys are spent together with the other instances."""
        if self.link is not None:
            pool.shared = SharedKeyBudgets(self.link, self.limiter)

    @property
    def refusing(self) -> bool:
        """Redis is down and the policy is fail_closed: not ready, no requests."""
        return self.link is not None and not self.link.up and self.link.fail_closed

    async def flush(self) -> None:
        if self.meter is not None:
            await self.meter.flush()
        if self.view is not None:
            await self.view.flush()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        link = self.link
        if link is None:
            yield
            return
        await link.heartbeat(self.users, self.limiter.shared_leases, self.flush)
        task = asyncio.create_task(link.run(self.users, self.limiter.shared_leases, self.flush))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.limiter.settler.drain()
            await link.heartbeat(None, self.limiter.shared_leases, self.flush)  # the last usage
            await link.leave()
