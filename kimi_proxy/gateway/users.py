"""Users of a shared proxy: a name, a key shown once, limits. The store keeps only the key's
SHA-256 (a key is 256 random bits: a fast hash is enough, and it is looked up on every request).

With Redis (`KIMI_REDIS_URL`), the users live there (`redis_users.py`) and every instance sees
a change within `RELOAD_SECONDS`. Single machine: a JSON file (`KIMI_USERS_FILE`, default
`~/.config/kimi-proxy/users.json`),
written whole to a temporary file and renamed into place under a lock, so nothing is ever
half-written and several instances on the machine see a change (`UserDirectory` re-reads it
when it changes, within `RELOAD_SECONDS`). Once a user exists, every request needs a user key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kimi_proxy.config.private_files import replace_private

log = logging.getLogger("kimi_proxy.users")
KEY_PREFIX = "kpu_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # whole names only (fullmatch)
RELOAD_SECONDS = 0.5  # a revoked key stops working within this on every instance
DEFAULT_USERS_FILE = Path("~/.config/kimi-proxy/users.json")


#: Limits named on a command line or in a request: a value, or None (not given).
Given = Mapping[str, int | float | None]


class UserError(Exception):
    """A user command that cannot be done; the message says why."""


class UnknownName(UserError):
    """No user (or team) has this name."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"No {kind} named {name!r}.")


class NameTaken(UserError):
    """A user (or team) has this name already."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"A {kind} named {name!r} exists already; pick another name.")


def team_has_members(name: str, members: list[str]) -> UserError:
    """A team cannot go while users are in it."""
    return UserError(
        f"Team {name!r} still has members ({', '.join(members)}): move them "
        "first (kimi-proxy users limits NAME --clear team)."
    )


@dataclass(frozen=True, slots=True)
class UserLimits:
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    daily_tokens: int | None = None
    daily_usd: float | None = None  # dollars a UTC day
    monthly_usd: float | None = None  # dollars a calendar month

    def describe(self) -> str:
        parts = []
        for name, value in asdict(self).items():
            if not value:
                continue
            if name.endswith("_usd"):
                parts.append(f"${value:,.2f} a {'day' if name == 'daily_usd' else 'month'}")
            else:
                parts.append(f"{name.replace('_', ' ')} {value:,}")
        return ", ".join(parts) or "no limits"

    def merged(self, given: Given, clear: Iterable[str] = ()) -> UserLimits:
        """These limits with the `given` ones changed (None: not given) and `clear` dropped."""
        changed: dict[str, Any] = {n: v for n, v in given.items() if v is not None}
        return replace(self, **changed, **dict.fromkeys(clear))


@dataclass(frozen=True, slots=True)
class User:
    name: str
    key_hash: str = field(repr=False)
    created: float
    revoked: bool = False
    limits: UserLimits = UserLimits()
    team: str | None = None  # a request must pass the team's limits too


@dataclass(frozen=True, slots=True)
class Team:
    """A group of users with shared limits: every member's requests count against them."""

    name: str
    created: float
    limits: UserLimits = UserLimits()


def team_entry(team: Team) -> dict[str, Any]:
    return {"created": team.created, "limits": asdict(team.limits)}


def team_from_entry(name: str, entry: dict[str, Any]) -> Team:
    return Team(name, entry["created"], UserLimits(**entry.get("limits", {})))


def teamed(team: str | None) -> Callable[[User], User]:
    """The user moved to `team` (None: no team)."""
    return lambda user: replace(user, team=team)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def revoked(user: User) -> User:
    return replace(user, revoked=True)


def rekeyed(key: str) -> Callable[[User], User]:
    """A new key for the user (active again, if it was revoked); the old one stops working."""
    return lambda user: replace(user, key_hash=hash_key(key), revoked=False)


def limited(given: Given, clear: Iterable[str]) -> Callable[[User], User]:
    """Only the limits named change; the others stay."""
    dropped = tuple(clear)
    return lambda user: replace(user, limits=user.limits.merged(given, dropped))


def removed(user: User) -> None:
    return None


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise UserError(
            f"{name!r} is not a usable name: letters, digits, '.', '_', '@' or '-', "
            "at most 64 characters."
        )


def user_entry(user: User) -> dict[str, Any]:
    """A user as stored (JSON), without its name (the key it is stored under)."""
    entry = {**asdict(user), "limits": asdict(user.limits)}
    entry.pop("name")
    return entry


def user_from_entry(name: str, entry: dict[str, Any]) -> User:
    return User(
        name=name,
        key_hash=entry["key_hash"],
        created=entry["created"],
        revoked=entry.get("revoked", False),
        limits=UserLimits(**entry.get("limits", {})),
        team=entry.get("team"),
    )


class UserFile:
    """The users and teams as a JSON file; every change is read, changed and written under a
    lock."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.path}: cannot read the users file ({exc}).") from None
        return raw if isinstance(raw, dict) else {}

    def load(self) -> dict[str, User]:
        raw = self._read()
        return {name: user_from_entry(name, entry) for name, entry in raw.get("users", {}).items()}

    def load_teams(self) -> dict[str, Team]:
        raw = self._read()
        return {name: team_from_entry(name, entry) for name, entry in raw.get("teams", {}).items()}

    @contextlib.contextmanager
    def changing(self) -> Iterator[tuple[dict[str, User], dict[str, Team]]]:
        """The users and teams to change in place; written back atomically when the block
        succeeds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users, teams = self.load(), self.load_teams()
            yield users, teams
            data: dict[str, Any] = {"users": {u.name: user_entry(u) for u in users.values()}}
            if teams:
                data["teams"] = {t.name: team_entry(t) for t in teams.values()}
            replace_private(self.path, json.dumps(data, indent=1).encode())

    def add(self, name: str, limits: UserLimits, team: str | None = None) -> str:
        check_name(name)
        key = new_key()
        with self.changing() as (users, teams):
            if name in users:
                raise NameTaken("user", name)
            check_team(team, teams)
            users[name] = User(name, hash_key(key), time.time(), limits=limits, team=team)
        return key

    def change(self, name: str, how: Callable[[User], User | None]) -> User | None:
        """One user changed by `how` (None: removed), under the lock."""
        with self.changing() as (users, teams):
            if name not in users:
                raise UnknownName("user", name)
            changed = how(users[name])
            if changed is None:
                del users[name]
            else:
                check_team(changed.team, teams)
                users[name] = changed
            return changed

    def add_team(self, name: str, limits: UserLimits) -> Team:
        check_name(name)
        with self.changing() as (_, teams):
            if name in teams:
                raise NameTaken("team", name)
            team = teams[name] = Team(name, time.time(), limits)
        return team

    def change_team(self, name: str, how: Callable[[Team], Team | None]) -> Team | None:
        with self.changing() as (users, teams):
            if name not in teams:
                raise UnknownName("team", name)
            changed = how(teams[name])
            if changed is None:
                if members := sorted(u.name for u in users.values() if u.team == name):
                    raise team_has_members(name, members)
                del teams[name]
            else:
                teams[name] = changed
            return changed


def check_team(team: str | None, teams: dict[str, Team]) -> None:
    if team is not None and team not in teams:
        known = ", ".join(sorted(teams)) or "none yet"
        raise UserError(
            f"No team named {team!r} (teams: {known}); add it first: kimi-proxy teams add {team}"
        )


class UserDirectory:
    """Who a key belongs to, for the server. With a users file, the file is re-read when it
    changes; with Redis, the gateway's link `load`s the users whenever they change there."""

    def __init__(self, store: UserFile | None) -> None:
        self.store = store
        self._checked = 0.0
        self._stamp: float | None = None
        self._by_hash: dict[str, User] = {}
        self.teams: dict[str, Team] = {}
        self.any = False  # whether any user exists: then every request needs a user key
        self.known = store is not None  # with Redis: not until the users were read once
        #: Why the users are not known (a file that cannot be read): the gateway's 503 says it.
        self.problem: str | None = None
        self._read_once = False
        self.refresh(force=True)

    def load(self, users: dict[str, User], teams: dict[str, Team] | None = None) -> None:
        self._by_hash = {u.key_hash: u for u in users.values()}
        self.teams = teams or {}
        self.any = bool(users)
        self.known = True

    def team(self, name: str | None) -> Team | None:
        return self.teams.get(name) if name else None

    def everyone(self) -> list[User]:
        """The users, by name."""
        return sorted(self._by_hash.values(), key=lambda u: u.name)

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.store is None or (not force and now - self._checked < RELOAD_SECONDS):
            return
        self._checked = now
        try:
            stamp: float | None = self.store.path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and not force:
            return
        try:
            if stamp is None and self.any:  # users existed: a vanished file opens nothing
                raise UserError(f"{self.store.path}: the users file is gone.")
            users, teams = self.store.load(), self.store.load_teams()
        except UserError as exc:
            self._stamp = stamp
            if self._read_once:  # keep serving the users last read
                log.error("%s Still using the users read before.", exc)
            else:  # never read: serve no one rather than everyone
                self.known = False
                self.problem = f"{exc} This gateway serves no one until it can read it."
                log.error("%s", self.problem)
            return
        self._stamp = stamp
        self.problem = None
        self._read_once = True
        self.load(users, teams)

    def user(self, key: str) -> User | None:
        """The active user whose key this is, or None."""
        self.refresh()
        found = self._by_hash.get(hash_key(key))
        return found if found is not None and not found.revoked else None
