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
    NameTaken,
    Team,
    UnknownName,
    User,
    UserLimits,
    check_name,
    check_team,
    hash_key,
    new_key,
    team_entry,
    team_from_entry,
    team_has_members,
    user_entry,
    user_from_entry,
)


class RedisUsers:
    def __init__(self, client: Redis, prefix: str = "kimi") -> None:
        self.client = client
        self.users_key = f"{prefix}:users"
        self.teams_key = f"{prefix}:teams"
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

    async def load_teams(self) -> dict[str, Team]:
        raw = await cast("Awaitable[dict[bytes, bytes]]", self.client.hgetall(self.teams_key))
        return {n.decode(): team_from_entry(n.decode(), orjson.loads(e)) for n, e in raw.items()}

    async def add(
        self,
        name: str,
        limits: UserLimits,
        created: float | None = None,
        *,
        team: str | None = None,
    ) -> str:
        check_name(name)
        check_team(team, await self.load_teams())
        key = new_key()
        when = time.time() if created is None else created
        user = User(name, hash_key(key), when, limits=limits, team=team)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.users_key, name, _json(user))
            pipe.incr(self.version_key)
            added, _ = await pipe.execute()
        if not added:
            raise NameTaken("user", name)
        return key

    async def change(self, name: str, how: Callable[[User], User | None]) -> User | None:
        """Read, change (None: remove) and write one user, retried if another writer came in
        between."""
        changed: list[User | None] = []

        async def attempt(pipe: Pipeline) -> None:
            entry = await cast("Awaitable[bytes | None]", pipe.hget(self.users_key, name))
            if entry is None:
                raise UnknownName("user", name)
            user = how(user_from_entry(name, orjson.loads(entry)))
            if user is not None and user.team is not None:
                found = await cast("Awaitable[bool]", pipe.hexists(self.teams_key, user.team))
                if not found:
                    check_team(user.team, {})
            pipe.multi()  # type: ignore[no-untyped-call]
            if user is None:
                pipe.hdel(self.users_key, name)
            else:
                pipe.hset(self.users_key, name, _json(user))
            pipe.incr(self.version_key)
            changed[:] = [user]

        await self.client.transaction(attempt, self.users_key, self.teams_key)
        return changed[0]

    async def add_team(self, name: str, limits: UserLimits) -> Team:
        check_name(name)
        team = Team(name, time.time(), limits)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.teams_key, name, orjson.dumps(team_entry(team)).decode())
            pipe.incr(self.version_key)
            added, _ = await pipe.execute()
        if not added:
            raise NameTaken("team", name)
        return team

    async def change_team(self, name: str, how: Callable[[Team], Team | None]) -> Team | None:
        changed: list[Team | None] = []

        async def attempt(pipe: Pipeline) -> None:
            entry = await cast("Awaitable[bytes | None]", pipe.hget(self.teams_key, name))
            if entry is None:
                raise UnknownName("team", name)
            team = how(team_from_entry(name, orjson.loads(entry)))
            if team is None:
                users = await cast("Awaitable[dict[bytes, bytes]]", pipe.hgetall(self.users_key))
                members = sorted(
                    n.decode() for n, e in users.items() if orjson.loads(e).get("team") == name
                )
                if members:
                    raise team_has_members(name, members)
            pipe.multi()  # type: ignore[no-untyped-call]
            if team is None:
                pipe.hdel(self.teams_key, name)
            else:
                pipe.hset(self.teams_key, name, orjson.dumps(team_entry(team)).decode())
            pipe.incr(self.version_key)
            changed[:] = [team]

        await self.client.transaction(attempt, self.teams_key, self.users_key)
        return changed[0]


def _json(user: User) -> str:
    return orjson.dumps(user_entry(user)).decode()
