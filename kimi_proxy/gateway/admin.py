"""The operator's changes to users — add, limits, revoke, rotate, remove — as one implementation
for the CLI (`kimi-proxy users …`) and the admin API (`/admin/users`), each change appended to
the audit log: who (`cli` or `api`), what, on whom, the fields changed — never a key.

The users live in Redis (`redis_users.py`) on a gateway that has it, else in the users file;
the audit log in a Redis stream (`{prefix}:audit`) or a JSON-lines file beside the users file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
from redis.asyncio import Redis

from kimi_proxy.config.private_files import open_private

from .users import (
    Given,
    Team,
    User,
    UserFile,
    UserLimits,
    limited,
    new_key,
    rekeyed,
    removed,
    revoked,
    teamed,
)

AUDIT_KEPT = 100_000  # entries the Redis stream keeps (about)


class UserStore(Protocol):
    """The users and teams, wherever they live: the file (`FileUsers`) or Redis
    (`RedisUsers`)."""

    async def load(self) -> dict[str, User]: ...

    async def add(self, name: str, limits: UserLimits, *, team: str | None = None) -> str: ...

    async def change(self, name: str, how: Callable[[User], User | None]) -> User | None: ...

    async def load_teams(self) -> dict[str, Team]: ...

    async def add_team(self, name: str, limits: UserLimits) -> Team: ...

    async def change_team(self, name: str, how: Callable[[Team], Team | None]) -> Team | None: ...


@dataclass(frozen=True, slots=True)
class FileUsers:
    """`UserFile`, as a `UserStore`: each change is still one locked write."""

    file: UserFile

    async def load(self) -> dict[str, User]:
        return self.file.load()

    async def add(self, name: str, limits: UserLimits, *, team: str | None = None) -> str:
        return self.file.add(name, limits, team)

    async def change(self, name: str, how: Callable[[User], User | None]) -> User | None:
        return self.file.change(name, how)

    async def load_teams(self) -> dict[str, Team]:
        return self.file.load_teams()

    async def add_team(self, name: str, limits: UserLimits) -> Team:
        return self.file.add_team(name, limits)

    async def change_team(self, name: str, how: Callable[[Team], Team | None]) -> Team | None:
        return self.file.change_team(name, how)


class AuditLog(Protocol):
    async def append(self, entry: dict[str, Any]) -> None: ...

    async def read(self, since: float) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class FileAudit:
    """The audit log beside the users file: one JSON line per change, readable by its owner."""

    path: Path

    @classmethod
    def beside(cls, users_file: Path) -> FileAudit:
        users_file = users_file.expanduser()
        return cls(users_file.with_name(users_file.stem + ".audit.jsonl"))

    async def append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(open_private(self.path, append=True), "ab") as out:
            out.write(orjson.dumps(entry) + b"\n")

    async def read(self, since: float) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        entries = [orjson.loads(line) for line in lines if line.strip()]
        return [e for e in entries if e.get("at", 0) >= since]


@dataclass(frozen=True, slots=True)
class RedisAudit:
    """The audit log as a Redis stream, shared by every instance and every operator."""

    client: Redis
    prefix: str

    async def append(self, entry: dict[str, Any]) -> None:
        await self.client.xadd(
            f"{self.prefix}:audit",
            {"entry": orjson.dumps(entry)},
            maxlen=AUDIT_KEPT,
            approximate=True,
        )

    async def read(self, since: float) -> list[dict[str, Any]]:
        start = f"{int(since * 1000)}-0"
        found = self.client.xrange(f"{self.prefix}:audit", min=start)
        entries = await cast("Awaitable[list[tuple[bytes, dict[bytes, bytes]]]]", found)
        return [orjson.loads(fields[b"entry"]) for _, fields in entries]


def user_view(user: User) -> dict[str, Any]:
    """A user as the operator sees it: never its key, nor the key's hash."""
    return {
        "name": user.name,
        "state": "revoked" if user.revoked else "active",
        "team": user.team,
        "created": _iso(user.created),
        **asdict(user.limits),
    }


def team_view(team: Team) -> dict[str, Any]:
    return {"name": team.name, "created": _iso(team.created), **asdict(team.limits)}


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Admin:
    """The changes, each audited as made by `who`."""

    store: UserStore
    audit: AuditLog
    who: str  # "cli" or "api"

    async def users(self) -> list[User]:
        return sorted((await self.store.load()).values(), key=lambda u: u.name)

    async def user(self, name: str) -> User | None:
        return (await self.store.load()).get(name)

    async def add(self, name: str, given: Given, team: str | None = None) -> tuple[UserLimits, str]:
        """A new user with these limits (in `team`); its key (returned once, never stored)."""
        limits = UserLimits().merged(given)
        key = await self.store.add(name, limits, team=team)
        await self._audited("add", name, {**_set(given), **({"team": team} if team else {})})
        return limits, key

    async def limit(
        self,
        name: str,
        given: Given,
        clear: Iterable[str],
        team: str | None = None,
    ) -> User:
        """Change the limits named, drop those in `clear` (`team` among them: out of its team),
        and move the user to `team` when given."""
        dropped = [c for c in clear if c != "team"]
        leave = "team" in clear

        def change(user: User) -> User:
            changed = limited(given, dropped)(user)
            if team is not None or leave:
                changed = teamed(team)(changed)
            return changed

        user = await self.store.change(name, change)
        assert user is not None
        fields: dict[str, Any] = {**_set(given), **dict.fromkeys(dropped)}
        if team is not None or leave:
            fields["team"] = team
        await self._audited("limits", name, fields)
        return user

    async def teams(self) -> list[Team]:
        return sorted((await self.store.load_teams()).values(), key=lambda t: t.name)

    async def add_team(self, name: str, given: Given) -> Team:
        team = await self.store.add_team(name, UserLimits().merged(given))
        await self._audited("team add", name, _set(given))
        return team

    async def limit_team(self, name: str, given: Given, clear: Iterable[str]) -> Team:
        dropped = list(clear)

        def change(team: Team) -> Team:
            return replace(team, limits=team.limits.merged(given, dropped))

        team = await self.store.change_team(name, change)
        assert team is not None
        await self._audited("team limits", name, {**_set(given), **dict.fromkeys(dropped)})
        return team

    async def remove_team(self, name: str) -> None:
        await self.store.change_team(name, lambda team: None)
        await self._audited("team remove", name, {})

    async def revoke(self, name: str) -> None:
        await self.store.change(name, revoked)
        await self._audited("revoke", name, {})

    async def rotate(self, name: str) -> str:
        key = new_key()
        await self.store.change(name, rekeyed(key))
        await self._audited("rotate", name, {})
        return key

    async def remove(self, name: str) -> None:
        await self.store.change(name, removed)
        await self._audited("remove", name, {})

    async def _audited(self, action: str, target: str, fields: dict[str, Any]) -> None:
        now = time.time()
        await self.audit.append(
            {
                "at": now,
                "time": _iso(now),
                "who": self.who,
                "action": action,
                "target": target,
                "fields": fields,
            }
        )


def _set(given: Given) -> dict[str, int | float]:
    return {name: value for name, value in given.items() if value is not None}
