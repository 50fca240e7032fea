"""Where budgets live: one small interface, two implementations of the same contract.

`MemoryStore` keeps them in this process (one machine, or one instance's share while Redis is
unreachable); `RedisStore` keeps them in Redis, shared by every instance, each step one Lua
script (`lua/admit.lua`, `lua/settle.lua`: package data, the same rule as `window.py`) and so
one round trip, however many subjects a request claims (its user and its provider key). The
clock of `RedisStore` is the Redis server's, so instances' clocks never disagree; tests may
pass `now_ms` to both to compare them step by step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from .window import CONCURRENCY, Admitted, Allowances, Claim, Decision, Refused


@dataclass(frozen=True, slots=True)
class Settlement:
    """One request's end: its claims spend `used_tokens` (None: their reservation), or are
    given back whole."""

    ident: str
    claims: tuple[Claim, ...]
    used_tokens: int | None
    give_back: bool = False
    used_usd: int | None = None  # what it cost, in micro-dollars (None: its reservation)


def _script(name: str) -> str:
    return files("kimi_proxy.gateway").joinpath("lua", name).read_text(encoding="utf-8")


class LimitStore(Protocol):
    """Budgets by subject ("user:alice", "key:groq:GROQ_API_KEY")."""

    async def admit(
        self, ident: str, claims: tuple[Claim, ...], lease_ms: int, now_ms: int | None = None
    ) -> Decision: ...

    async def settle_many(self, settlements: list[Settlement]) -> None: ...

    async def renew(self, leases: list[tuple[str, str]], lease_ms: int) -> None: ...

    async def held(self, windows: list[tuple[str, str]]) -> list[int]: ...


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class MemoryStore:
    """Budgets in this process."""

    def __init__(self, clock: Callable[[], int] = monotonic_ms) -> None:
        self.clock = clock
        self.allowances = Allowances()

    async def admit(
        self, ident: str, claims: tuple[Claim, ...], lease_ms: int, now_ms: int | None = None
    ) -> Decision:
        now = self.clock() if now_ms is None else now_ms
        return self.allowances.admit(ident, claims, lease_ms, now)

    async def settle_many(self, settlements: list[Settlement]) -> None:
        for s in settlements:
            self.allowances.settle(
                s.ident, s.claims, s.used_tokens, give_back=s.give_back, used_usd=s.used_usd
            )

    async def held(self, windows: list[tuple[str, str]]) -> list[int]:
        """What each (subject, window) holds now."""
        found = []
        for subject, window in windows:
            allowance = self.allowances.subjects.get(subject)
            log = allowance.logs.get(window) if allowance is not None else None
            found.append(log.total if log is not None else 0)
        return found

    async def renew(self, leases: list[tuple[str, str]], lease_ms: int) -> None:
        now = self.clock()
        for subject, ident in leases:
            allowance = self.allowances.subjects.get(subject)
            if allowance is not None:
                allowance.renew([ident], lease_ms, now)


class RedisStore:
    """Budgets in Redis under `prefix`, shared by every instance that names the same Redis."""

    def __init__(self, client: Redis, prefix: str = "kimi") -> None:
        self.client = client
        self.prefix = prefix
        self._admit = client.register_script(_script("admit.lua"))
        self._settle = client.register_script(_script("settle.lua"))

    def _base(self, subject: str) -> str:
        return f"{self.prefix}:budget:{subject}"

    def _keys(self, claims: tuple[Claim, ...]) -> list[str]:
        keys: list[str] = []
        for claim in claims:
            base = self._base(claim.subject)
            keys.append(f"{base}:leases")
            for spec in claim.windows:
                keys += [f"{base}:{spec.name}", f"{base}:{spec.name}:amounts"]
        return keys

    async def admit(
        self, ident: str, claims: tuple[Claim, ...], lease_ms: int, now_ms: int | None = None
    ) -> Decision:
        plan = [
            [
                c.concurrency or 0,
                c.tokens,
                [[w.span_ms, w.limit, w.kind] for w in c.windows],
                c.usd,
                c.bound_tokens,
                c.bound_usd,
            ]
            for c in claims
        ]
        args = [ident, "" if now_ms is None else now_ms, lease_ms, orjson.dumps(plan)]
        answer = await self._admit(keys=self._keys(claims), args=args)
        if int(answer[0]) == 1:
            return Admitted()
        claim = claims[int(answer[1]) - 1]
        window, after = int(answer[2]), int(answer[3])
        limit = CONCURRENCY if window == 0 else claim.windows[window - 1].name
        held = int(answer[4]) if len(answer) > 4 else 0
        return Refused(claim.subject, limit, after, held)

    async def settle_many(self, settlements: list[Settlement]) -> None:
        """Every settlement in one pipeline: one round trip for the batch. (EVALSHA by hand:
        redis-py asks `SCRIPT EXISTS` first on every pipeline holding a script; the script is
        loaded again only when Redis has lost it — a restart.)"""
        for attempt in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                for s in settlements:
                    keys = self._keys(s.claims)
                    kinds = [[w.kind for w in claim.windows] for claim in s.claims]
                    used = "" if s.used_tokens is None else s.used_tokens
                    cost = "" if s.used_usd is None else s.used_usd
                    args = [s.ident, used, int(s.give_back), orjson.dumps(kinds), cost]
                    pipe.evalsha(self._settle.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
            if attempt or not any(isinstance(r, NoScriptError) for r in results):
                return
            await self.client.script_load(self._settle.script)

    async def held(self, windows: list[tuple[str, str]]) -> list[int]:
        """What each (subject, window) holds now (its amounts' `_total`, as admit.lua keeps
        it): one pipeline, one round trip."""
        if not windows:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for subject, window in windows:
                pipe.hget(f"{self._base(subject)}:{window}:amounts", "_total")
            totals = await pipe.execute()
        return [int(total or 0) for total in totals]

    async def renew(self, leases: list[tuple[str, str]], lease_ms: int) -> None:
        """Push the expiry of this instance's open streams on (one pipeline); a lease that
        already expired stays gone."""
        if not leases:
            return
        time_now = await self.client.time()
        expiry = time_now[0] * 1000 + time_now[1] // 1000 + lease_ms
        async with self.client.pipeline(transaction=False) as pipe:
            for subject, ident in leases:
                pipe.zadd(f"{self._base(subject)}:leases", {ident: expiry}, xx=True)
            await pipe.execute()
