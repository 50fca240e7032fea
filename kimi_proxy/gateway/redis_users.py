"""The users in Redis, shared by every instance: a hash of name → the user as JSON (its key's
SHA-256, never the key), and a version counter bumped by every change, which instances poll to
reload (`link.py`). A change is one transaction: nothing is half-written."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from .users import (
    User,
    UserError,
    UserLimits,
    check_name,
    hash_key,
    new_key,
    user_entry,
    user_from_entry,
)


class RedisUsers:
    def __init__(self, client: Redis, prefix: str = "kimi") -> None:
        self.client = client
        self.users_key = f"{prefix}:users"
        self.version_key = f"{prefix}:users:version"

    async def version(self) -> int:
        return int(await self.client.get(self.version_key) or 0)

    async def load(self) -> dict[str, User]:
        raw = await cast("Awaitable[dict[bytes, bytes]]", self.client.hgetall(self.users_key))
        users: dict[str, User] = {}
        for name, entry in raw.items():
            text = name.decode()
            users[text] = user_from_entry(text, orjson.loads(entry))
        return users

    async def add(self, name: str, limits: UserLimits, created: float | None = None) -> str:
        check_name(name)
        key = new_key()
        when = time.time() if created is None else created
        user = User(name, hash_key(key), when, limits=limits)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.users_key, name, _json(user))
            pipe.incr(self.version_key)
            added, _ = await pipe.execute()
        if not added:
            raise UserError(f"A user named {name!r} exists already; pick another name.")
        return key

    async def change(self, name: str, how: Callable[[User], User | None]) -> User | None:
        """Read, change (None: remove) and write one user, retried if another writer came in
        between."""
        changed: list[User | None] = []

        async def attempt(pipe: Pipeline) -> None:
            entry = await cast("Awaitable[bytes | None]", pipe.hget(self.users_key, name))
            if entry is None:
                raise UserError(f"No user named {name!r}.")
            user = how(user_from_entry(name, orjson.loads(entry)))
            pipe.multi()  # type: ignore[no-untyped-call]
            if user is None:
                pipe.hdel(self.users_key, name)
            else:
                pipe.hset(self.users_key, name, _json(user))
            pipe.incr(self.version_key)
            changed[:] = [user]

        await self.client.transaction(attempt, self.users_key)
        return changed[0]


def _json(user: User) -> str:
    return orjson.dumps(user_entry(user)).decode()
