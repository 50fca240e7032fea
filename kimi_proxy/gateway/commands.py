"""`kimi-proxy users …` and `kimi-proxy usage …`: on Redis when the gateway has one (the
`KIMI_REDIS_URL` or `[gateway] redis_url` the instances use), else on the users file and the
access log. Every refusal is one line on stderr and exit code 2; nothing is half-written."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from kimi_proxy.config.gateway import Gateway

from .admin import Admin, FileAudit, FileUsers, RedisAudit
from .metering import (
    DIMENSIONS,
    UsageRow,
    day_start,
    fold,
    render,
    rows_from_access_log,
    stored_rows,
    week_before,
)
from .redis_users import RedisUsers
from .users import Given, User, UserError, UserFile, UserLimits

USAGE_FORMATS = ("table", "csv", "json")
LIMIT_NAMES = ("rpm", "tpm", "concurrency", "daily-tokens", "daily-usd", "monthly-usd")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a limit must be above 0")
    return number


def _dollars(value: str) -> float:
    try:
        number = float(value.removeprefix("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an amount of dollars") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: a budget must be above 0")
    return number


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-12-01") from None


def _dimensions(value: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in value.split(",") if p.strip())
    unknown = [p for p in parts if p not in DIMENSIONS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"{value!r}: group by any of {', '.join(DIMENSIONS)}, comma-separated"
        )
    return parts


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=_positive, help="requests a minute")
    parser.add_argument("--tpm", type=_positive, help="tokens a minute (input + answer budget)")
    parser.add_argument("--concurrency", type=_positive, help="requests at once")
    parser.add_argument("--daily-tokens", type=_positive, help="tokens a day")
    parser.add_argument("--daily-usd", type=_dollars, help="dollars a UTC day (its cost)")
    parser.add_argument("--monthly-usd", type=_dollars, help="dollars a calendar month")


def add_parsers(sub: Any) -> None:
    """The `users` and `usage` commands, on the CLI's subparsers."""
    users = sub.add_parser("users", help="the gateway's users: their keys and limits")
    users.add_argument("--users-file", metavar="USERS_FILE", help="(KIMI_USERS_FILE)")
    users.add_argument("--redis-url", metavar="REDIS_URL", help="(KIMI_REDIS_URL)")
    users.add_argument("--config", metavar="CONFIG", help="(KIMI_PROXY_CONFIG)")
    users.add_argument(
        "--file",
        action="store_true",
        help="without Redis: yes, change the users file on this machine (a single-machine "
        "proxy's users; a gateway on Redis does not see them)",
    )
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user; prints the new key once")
    add.add_argument("name")
    _limit_flags(add)
    add.add_argument("--team", help="the user's team: its limits apply too")
    actions.add_parser("list", help="the users, their state and limits (never their keys)")
    for action, text in (
        ("revoke", "revoke a user's key (on every instance)"),
        ("rotate", "a new key for a user (revoked or not); prints it once, the old one stops"),
        ("remove", "delete a user"),
    ):
        actions.add_parser(action, help=text).add_argument("name")
    limits = actions.add_parser(
        "limits", help="change the limits named (the others stay); --clear drops one"
    )
    limits.add_argument("name")
    _limit_flags(limits)
    limits.add_argument("--team", help="move the user to this team")
    limits.add_argument(
        "--clear",
        action="append",
        default=[],
        choices=(*LIMIT_NAMES, "team"),
        help="drop this limit, or the team (repeat for several)",
    )

    teams = sub.add_parser("teams", help="teams: limits shared by their members")
    teams.add_argument("--users-file", metavar="USERS_FILE", help="(KIMI_USERS_FILE)")
    teams.add_argument("--redis-url", metavar="REDIS_URL", help="(KIMI_REDIS_URL)")
    teams.add_argument("--config", metavar="CONFIG", help="(KIMI_PROXY_CONFIG)")
    teams.add_argument("--file", action="store_true", help="without Redis: the users file")
    team_actions = teams.add_subparsers(dest="action", required=True)
    _limit_flags(team_actions.add_parser("add", help="add a team with its limits"))
    team_actions.choices["add"].add_argument("name")
    team_actions.add_parser("list", help="the teams and their limits")
    team_limits = team_actions.add_parser("limits", help="change the limits named")
    team_limits.add_argument("name")
    _limit_flags(team_limits)
    team_limits.add_argument("--clear", action="append", default=[], choices=LIMIT_NAMES)
    team_actions.add_parser("remove", help="delete a team (it must have no members)").add_argument(
        "name"
    )

    audit = sub.add_parser("audit", help="every change to users and limits, by CLI or API")
    audit.add_argument(
        "--since", type=_day, help="from this day (YYYY-MM-DD, UTC); default: 7 days"
    )
    audit.add_argument("--users-file", metavar="USERS_FILE", help="(KIMI_USERS_FILE)")
    audit.add_argument("--redis-url", metavar="REDIS_URL", help="(KIMI_REDIS_URL)")
    audit.add_argument("--config", metavar="CONFIG", help="(KIMI_PROXY_CONFIG)")

    usage = sub.add_parser("usage", help="usage and cost per user, session, provider, model")
    usage.add_argument("--user", help="only this user")
    usage.add_argument(
        "--since", type=_day, help="from this day (YYYY-MM-DD, UTC); default: 7 days"
    )
    usage.add_argument("--format", choices=USAGE_FORMATS, default="table")
    usage.add_argument(
        "--by",
        type=_dimensions,
        default=("day", "user", "provider", "model"),
        help=f"group by (default day,user,provider,model; any of {','.join(DIMENSIONS)})",
    )
    usage.add_argument(
        "--access-log", type=Path, help="without Redis: read the proxy's JSON access log"
    )
    usage.add_argument("--redis-url", metavar="REDIS_URL", help="(KIMI_REDIS_URL)")
    usage.add_argument("--config", metavar="CONFIG", help="(KIMI_PROXY_CONFIG)")


def run_users(
    gateway: Gateway, users_file: Path, args: argparse.Namespace, *, file_named: bool = False
) -> int:
    """`kimi-proxy users add|list|revoke|rotate|remove|limits`. Without Redis, a change goes
    to the users file only when the admin means it (`--file`, or the file named by
    `--users-file`/`KIMI_USERS_FILE`): the gateway the key is for may well be on Redis."""
    users_file = users_file.expanduser()
    if not gateway.redis_url and not (args.file or file_named):
        if args.action != "list":
            print(
                f"kimi-proxy: KIMI_REDIS_URL is not set, so this would change the users file "
                f"{users_file} on this machine, which a gateway on Redis never reads (its key "
                "would not work there, and this machine's own proxy would start asking for "
                "user keys). For the team's gateway, set KIMI_REDIS_URL (or [gateway] "
                "redis_url in the config file). For this machine's users file, add --file: "
                f"kimi-proxy {args.command} --file {args.action} ...",
                file=sys.stderr,
            )
            return 2
        print(f"kimi-proxy: the users file {users_file} (no KIMI_REDIS_URL)", file=sys.stderr)
    try:
        return asyncio.run(_users(gateway, users_file, args))
    except UserError as exc:
        print(f"kimi-proxy: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # our reader has gone (`| head`): the CLI ends quietly
    except (RedisError, OSError) as exc:
        print(f"kimi-proxy: Redis does not answer ({exc}); nothing was changed.", file=sys.stderr)
        return 2


async def _users(gateway: Gateway, users_file: Path, args: argparse.Namespace) -> int:
    act = _teams_action if args.command == "teams" else _users_action
    if not gateway.redis_url:
        admin = Admin(FileUsers(UserFile(users_file)), FileAudit.beside(users_file), "cli")
        return await act(admin, args)
    client = Redis.from_url(gateway.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        store = RedisUsers(client, gateway.prefix)
        return await act(Admin(store, RedisAudit(client, gateway.prefix), "cli"), args)
    finally:
        await client.aclose()


async def _users_action(admin: Admin, args: argparse.Namespace) -> int:
    if args.action == "list":
        _print_users(await admin.users())
        return 0
    if args.action == "revoke":
        await admin.revoke(args.name)
        return _revoked(args.name)
    if args.action == "rotate":
        key = await admin.rotate(args.name)
        print(f"{args.name}: a new key (shown once, not stored); the old one stops working:")
        print(key)
        return 0
    if args.action == "remove":
        await admin.remove(args.name)
        print(f"{args.name}: removed")
        return 0
    given = _given_limits(args)
    if args.action == "add":
        limits, key = await admin.add(args.name, given, args.team)
        return _added(args.name, limits, key)
    clear = _cleared(args, given)
    if "team" in clear and args.team is not None:
        raise UserError("--clear team and --team: give one or the other.")
    return _limited(await admin.limit(args.name, given, clear, args.team))


def _cleared(args: argparse.Namespace, given: Given) -> list[str]:
    clear = [name.replace("-", "_") for name in args.clear]
    if both := [n for n in clear if given.get(n) is not None]:
        raise UserError(f"--clear {both[0]} and a new value for it: give one or the other.")
    return clear


async def _teams_action(admin: Admin, args: argparse.Namespace) -> int:
    if args.action == "list":
        for team in await admin.teams():
            print(f"{team.name}\t{team.limits.describe()}")
        return 0
    if args.action == "remove":
        await admin.remove_team(args.name)
        print(f"team {args.name}: removed")
        return 0
    given = _given_limits(args)
    if args.action == "add":
        team = await admin.add_team(args.name, given)
    else:
        team = await admin.limit_team(args.name, given, _cleared(args, given))
    print(f"team {team.name}: {team.limits.describe()}")
    return 0


def _given_limits(args: argparse.Namespace) -> dict[str, int | None]:
    return {
        "rpm": args.rpm,
        "tpm": args.tpm,
        "concurrency": args.concurrency,
        "daily_tokens": args.daily_tokens,
        "daily_usd": args.daily_usd,
        "monthly_usd": args.monthly_usd,
    }


def _print_users(users: list[User]) -> None:
    for user in users:
        state = "revoked" if user.revoked else "active"
        team = f"\tteam {user.team}" if user.team else ""
        print(f"{user.name}\t{state}\t{user.limits.describe()}{team}")


def _revoked(name: str) -> int:
    print(f"{name}: revoked (every instance refuses the key within a second)")
    return 0


def _added(name: str, limits: UserLimits, key: str) -> int:
    print(f"{name}: {limits.describe()}. The key (shown once, not stored):\n{key}")
    return 0


def _limited(user: User) -> int:
    print(f"{user.name}: {user.limits.describe()}")
    return 0


def run_usage(gateway: Gateway, args: argparse.Namespace) -> int:
    """`kimi-proxy usage [--user U] [--since DATE] [--format table|csv|json]`."""
    today = datetime.now(UTC).date()
    since: date = args.since or week_before(today)
    if since > today:
        print(f"kimi-proxy: --since {since} is in the future.", file=sys.stderr)
        return 2
    if gateway.redis_url:
        try:
            rows = asyncio.run(_usage_rows(gateway, since, today))
        except (RedisError, OSError) as exc:
            print(f"kimi-proxy: Redis does not answer ({exc}).", file=sys.stderr)
            return 2
    elif args.access_log is not None:
        try:
            with args.access_log.open(encoding="utf-8", errors="replace") as lines:
                rows = list(rows_from_access_log(lines))
        except OSError as exc:
            print(f"kimi-proxy: cannot read {args.access_log}: {exc.strerror}", file=sys.stderr)
            return 2
    else:
        print(
            "kimi-proxy: usage is kept in Redis (KIMI_REDIS_URL or [gateway] redis_url); "
            "without it, pass --access-log with the file the proxy's log went to.",
            file=sys.stderr,
        )
        return 2
    print(render(fold(rows, args.by, args.user, since), args.by, args.format))
    return 0


async def _usage_rows(gateway: Gateway, since: date, today: date) -> list[UsageRow]:
    assert gateway.redis_url is not None
    client = Redis.from_url(gateway.redis_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        return await stored_rows(client, gateway.prefix, since, today)
    finally:
        await client.aclose()


def run_audit(gateway: Gateway, users_file: Path, args: argparse.Namespace) -> int:
    """`kimi-proxy audit [--since DAY]`: one JSON line per change, oldest first."""
    today = datetime.now(UTC).date()
    since: date = args.since or week_before(today)
    start = day_start(since)
    try:
        entries = asyncio.run(_audit_entries(gateway, users_file.expanduser(), start))
    except (RedisError, OSError, ValueError) as exc:
        print(f"kimi-proxy: the audit log cannot be read ({exc}).", file=sys.stderr)
        return 2
    for entry in entries:
        print(json.dumps(entry, separators=(",", ":")))
    return 0


async def _audit_entries(gateway: Gateway, users_file: Path, since: float) -> list[Any]:
    if not gateway.redis_url:
        return await FileAudit.beside(users_file).read(since)
    client = Redis.from_url(gateway.redis_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        return await RedisAudit(client, gateway.prefix).read(since)
    finally:
        await client.aclose()
