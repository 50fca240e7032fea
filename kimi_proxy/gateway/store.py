"""Where budgets live: one small interface, two implementations of the same contract.

`MemoryStore` keeps them in this process (one machine, or one instance's share while Redis is
unreachable); `RedisStore` keeps them in Redis, shared by every instance, each step one Lua
script (`lua/admit.lua`, `lua/settle.lua`: package data, the same rule as `window.py`) and so
one round trip. The clock of `RedisStore` is the Redis server's, so instances' clocks never
disagree; tests may pass `now_ms` to both to compare them step by step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.resources import files
from typing import Protocol

from redis.asyncio import Redis

from .window import CONCURRENCY, Admitted, Allowance, Decision, Refused, WindowSpec


def _script(name: str) -> str:
    return files("kimi_proxy.gateway").joinpath("lua", name).read_text(encoding="utf-8")


class LimitStore(Protocol):
    """Budgets by subject ("user:alice", "key:groq:GROQ_API_KEY")."""

    async def admit(
        self,
        subject: str,
        ident: str,
        windows: tuple[WindowSpec, ...],
        tokens: int,
        concurrency: int | None,
        lease_ms: int,
        now_ms: int | None = None,
    ) -> Decision: ...

    async def settle(
        self,
        subject: str,
        ident: str,
        windows: tuple[WindowSpec, ...],
        used_tokens: int | None,
        *,
        give_back: bool = False,
    ) -> None: ...

    async def renew(self, leases: list[tuple[str, str]], lease_ms: int) -> None: ...


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class MemoryStore:
    """Budgets in this process."""

    def __init__(self, clock: Callable[[], int] = monotonic_ms) -> None:
        self.clock = clock
        self.allowances: dict[str, Allowance] = {}

    async def admit(
        self,
        subject: str,
        ident: str,
        windows: tuple[WindowSpec, ...],
        tokens: int,
        concurrency: int | None,
        lease_ms: int,
        now_ms: int | None = None,
    ) -> Decision:
        allowance = self.allowances.setdefault(subject, Allowance())
        now = self.clock() if now_ms is None else now_ms
        return allowance.admit(ident, windows, tokens, concurrency, lease_ms, now)

    async def settle(
        self,
        subject: str,
        ident: str,
        windows: tuple[WindowSpec, ...],
        used_tokens: int | None,
        *,
        give_back: bool = False,
    ) -> None:
        allowance = self.allowances.get(subject)
        if allowance is not None:
            allowance.settle(ident, used_tokens, give_back=give_back)

    async def renew(self, leases: list[tuple[str, str]], lease_ms: int) -> None:
        now = self.clock()
        for subject, ident in leases:
            allowance = self.allowances.get(subject)
            if allowance is not None:
                allowance.renew([ident], lease_ms, now)


class RedisStore:
    """Budgets in Redis under `prefix`, shared by every instance that names the same Redis."""

    def __init__(self, client: Redis, prefix: str = "kimi") -> None:
        self.client = client
        self.prefix = prefix
        self._admit = client.register_script(_script("admit.lua"))
        self._settle = client.register_script(_script("settle.lua"))

    def _keys(self, subject: str, windows: tuple[WindowSpec, ...]) -> list[str]:
        base = f"{self.prefix}:budget:{subject}"
        keys = [f"{base}:leases"]
        for spec in windows:
            keys += [f"{base}:{spec.name}", f"{base}:{spec.name}:amounts"]
        return keys

    async def admit(
        self,
        subject: str,
        ident: str,
        windows: tuple[WindowSpec, ...],
        tokens: int,
        concurrency: int | None,
        lease_ms: int,
        now_ms: int | None = None,
    ) -> Decision:
        args: list[str | int] = [
            ident,
            "" if now_ms is None else now_ms,
            lease_ms,
            concurrency or 0,
            tokens,
        ]
        for spec in windows:
            args += [spec.span_ms, spec.limit, spec.kind]
        answer = await self._admit(keys=self._keys(subject, windows), args=args)
        if int(answer[0]) == 1:
            return Admitted()
        index, after = int(answer[1]), int(answer[2])
        return Refused(CONCURRENCY if index == 0 else windows[index - 1].name, after)

    async def settle(
        self,
        subject: str,
        ident: str,
        windows: tuple[WindowSpec, ...],
        used_tokens: int | None,
        *,
        give_back: bool = False,
    ) -> None:
        args: list[str | int] = [
            ident,
            "" if used_tokens is None else used_tokens,
            int(give_back),
            *(spec.kind for spec in windows),
        ]
        await self._settle(keys=self._keys(subject, windows), args=args)

    async def renew(self, leases: list[tuple[str, str]], lease_ms: int) -> None:
        """Push the expiry of this instance's open streams on (one pipeline); a lease that
        already expired stays gone."""
        if not leases:
            return
        time_now = await self.client.time()
        expiry = time_now[0] * 1000 + time_now[1] // 1000 + lease_ms
        async with self.client.pipeline(transaction=False) as pipe:
            for subject, ident in leases:
                pipe.zadd(f"{self.prefix}:budget:{subject}:leases", {ident: expiry}, xx=True)
            await pipe.execute()
