"""This instance's link to the gateway's Redis: whether it answers, how many instances share it,
and the background work that keeps the shared state true — a heartbeat (the instance count
that `fail_open` divides limits by), the users reloaded when their version moves, this
instance's stream leases renewed, and metered usage flushed.

redis-py reconnects on the next command, so a Redis that comes back is used again without a
restart: `up` follows the last command's fate, and the heartbeat retries every `POLL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from kimi_proxy.config.gateway import Gateway

from .redis_users import RedisUsers
from .store import RedisStore
from .users import UserDirectory

log = logging.getLogger("kimi_proxy.gateway")
POLL_SECONDS = 0.5  # users reload within this; a revoked key stops working within a second
TIMEOUT_SECONDS = 0.5  # a command that takes longer counts Redis as down
INSTANCE_TTL_MS = 5_000  # an instance not heard from for this long is not counted


class RedisLink:
    def __init__(self, gateway: Gateway, client: Redis | None = None) -> None:
        assert gateway.redis_url is not None
        self.gateway = gateway
        self.client = client or Redis.from_url(
            gateway.redis_url,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
        )
        self.store = RedisStore(self.client, gateway.prefix)
        self.users = RedisUsers(self.client, gateway.prefix)
        self.instance = secrets.token_hex(6)
        self.up = True  # until a command says otherwise
        self.instances = 1  # alive at the last heartbeat: fail_open's divisor
        self.fallbacks = 0  # requests admitted on this instance's share while Redis was down
        self._users_version: int | None = None
        self._renewed = 0.0

    @property
    def lease_ms(self) -> int:
        return self.gateway.lease_ms

    @property
    def fail_closed(self) -> bool:
        return self.gateway.fail_closed

    def down_message(self) -> str:
        return (
            "This gateway keeps its users' limits in Redis, which does not answer; it is set "
            "to fail_closed (on_redis_down), so it takes no requests until Redis is back. "
            "Retry shortly, or ask the operator to check Redis."
        )

    def mark_down(self, exc: BaseException) -> None:
        if self.up:
            policy = (
                "refusing requests (fail_closed)"
                if self.fail_closed
                else f"admitting on this instance's share of each limit (1/{self.instances}, "
                "fail_open)"
            )
            log.warning("Redis does not answer (%s): %s", type(exc).__name__, policy)
        self.up = False

    def mark_up(self) -> None:
        if not self.up:
            log.warning("Redis answers again: limits are shared again")
        self.up = True

    def note_fallback(self) -> None:
        self.fallbacks += 1

    async def heartbeat(
        self,
        directory: UserDirectory | None,
        leases: Callable[[], list[tuple[str, str]]],
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        """One round of the background work; Redis errors mark the link down."""
        key = f"{self.gateway.prefix}:instances"
        try:
            now_ms = int(time.time() * 1000)
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {self.instance: now_ms + INSTANCE_TTL_MS})
                pipe.zremrangebyscore(key, "-inf", now_ms)
                pipe.zcard(key)
                pipe.get(self.users.version_key)
                _, _, alive, version = await pipe.execute()
            self.instances = max(1, int(alive))
            version = int(version or 0)
            if directory is not None and version != self._users_version:
                directory.load(await self.users.load(), await self.users.load_teams())
                self._users_version = version
            if time.monotonic() - self._renewed > self.lease_ms / 3000:
                await self.store.renew(leases(), self.lease_ms)
                self._renewed = time.monotonic()
            await flush()
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return
        self.mark_up()

    async def run(
        self,
        directory: UserDirectory | None,
        leases: Callable[[], list[tuple[str, str]]],
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        while True:
            await self.heartbeat(directory, leases, flush)
            await asyncio.sleep(POLL_SECONDS)

    async def leave(self) -> None:
        """This instance stops: it is no longer counted, and the connections close."""
        with contextlib.suppress(RedisError, OSError):
            await self.client.zrem(f"{self.gateway.prefix}:instances", self.instance)
        await self.client.aclose()
