"""`kimi-proxy serve | code | doctor` — the commands (`cli.py` dispatches to them)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import date
from typing import Any

from pydantic import AliasChoices, ValidationError
from pydantic_core import PydanticUndefined

from .config import LOOPBACK_HOSTS, Settings, load_settings, settings_to_env
from .gateway.users import DEFAULT_USERS_FILE, UserError, UserFile, UserLimits
from .pool_config import DEFAULT_CONFIG_PATH, ConfigError, load_pool_spec


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting (`--upstream-url` for `upstream_url`), naming its variable."""
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias.choices[1] if isinstance(alias, AliasChoices) else name.upper()
        default = (
            "" if field.default in (None, "", PydanticUndefined) else f", default {field.default}"
        )
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action="store_true", default=None, help=f"({env}{default})")
        else:
            parser.add_argument(flag, metavar=name.upper(), help=f"({env}{default})")


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = load_settings(**{name: getattr(args, name, None) for name in Settings.model_fields})
    default = DEFAULT_CONFIG_PATH.expanduser()
    if settings.config is None and default.is_file():
        settings.config = default
    if settings.users_file is None:
        settings.users_file = DEFAULT_USERS_FILE
    return settings


def serve(settings: Settings) -> int:
    import uvicorn

    from .app import configure_logging, create_app, proxy_state, tune_garbage_collector
    from .drain import DRAIN_LEFTOVER_SECONDS, DrainingServer

    if settings.host not in LOOPBACK_HOSTS and settings.auth_token is None:
        print(
            f"kimi-proxy: refusing to bind {settings.host}: binding beyond localhost requires "
            "KIMI_PROXY_AUTH_TOKEN (clients then send it as x-api-key or a Bearer token).",
            file=sys.stderr,
        )
        return 2
    try:
        spec = load_pool_spec(settings, os.environ, date.today())
    except ConfigError as exc:
        print(f"kimi-proxy: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, spec)
    if not spec.has_keys:
        logging.getLogger("kimi_proxy").warning(
            "no provider API key configured: set MOONSHOT_API_KEY, GROQ_API_KEY or another "
            "provider's key variable, or a config file (requests will get 401 until then)"
        )
    # The server re-raises SIGTERM through the previous handler once it has drained: a no-op
    # one makes a drained shutdown exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "server_header": False,
    }
    if settings.workers > 1:  # stateless workers: each process builds its app from the env
        os.environ.update(settings_to_env(settings))
        uvicorn.run(
            "kimi_proxy.app:app_from_env",
            factory=True,
            workers=settings.workers,
            timeout_graceful_shutdown=int(settings.drain_seconds),
            **options,
        )
        return 0
    app = create_app(settings, spec=spec)
    tune_garbage_collector()
    config = uvicorn.Config(app, timeout_graceful_shutdown=DRAIN_LEFTOVER_SECONDS, **options)
    DrainingServer(config, proxy_state(app), settings.drain_seconds).run()
    return 0


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a limit must be above 0")
    return number


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=_positive, help="requests a minute")
    parser.add_argument("--tpm", type=_positive, help="tokens a minute (input + answer budget)")
    parser.add_argument("--concurrency", type=_positive, help="requests at once")
    parser.add_argument("--daily-tokens", type=_positive, help="tokens a day")


def run_users(settings: Settings, args: argparse.Namespace) -> int:
    """`kimi-proxy users add|list|revoke|limits`: exit 2 with the reason when it cannot."""
    store = UserFile(settings.users_file or DEFAULT_USERS_FILE)
    try:
        if args.action == "list":
            for user in store.load().values():
                state = "revoked" if user.revoked else "active"
                print(f"{user.name}\t{state}\t{user.limits.describe()}")
            return 0
        if args.action == "revoke":
            store.revoke(args.name)
            print(f"{args.name}: revoked (every instance refuses the key within a second)")
            return 0
        limits = UserLimits(args.rpm, args.tpm, args.concurrency, args.daily_tokens)
        if args.action == "add":
            key = store.add(args.name, limits)
            print(f"{args.name}: {limits.describe()}. The key (shown once, not stored):\n{key}")
            return 0
        user = store.set_limits(args.name, limits)
        print(f"{user.name}: {user.limits.describe()}")
        return 0
    except UserError as exc:
        print(f"kimi-proxy: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kimi-proxy",
        description="Anthropic Messages API in front of OpenAI-compatible providers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the proxy server")
    _add_settings_flags(serve_parser)
    code_parser = sub.add_parser("code", help="start the proxy and run Claude Code through it")
    code_parser.add_argument("claude_args", nargs=argparse.REMAINDER)
    doctor_parser = sub.add_parser(
        "doctor", help="check each provider and key, without a model call"
    )
    doctor_parser.add_argument("--config", metavar="CONFIG", help="(KIMI_PROXY_CONFIG)")
    users = sub.add_parser("users", help="the gateway's users: their keys and limits")
    users.add_argument("--users-file", metavar="USERS_FILE", help="(KIMI_USERS_FILE)")
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user; prints the new key once")
    add.add_argument("name")
    _limit_flags(add)
    actions.add_parser("list", help="the users, their state and limits (never their keys)")
    revoke = actions.add_parser("revoke", help="revoke a user's key (on every instance)")
    revoke.add_argument("name")
    limits = actions.add_parser("limits", help="set a user's limits (omitted ones: none)")
    limits.add_argument("name")
    _limit_flags(limits)
    status = sub.add_parser(
        "statusline", help="one line for Claude Code's status line (reads its JSON on stdin)"
    )
    status.add_argument("--url", help="the proxy (default: 127.0.0.1 on KIMI_PROXY_PORT)")
    return parser


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv[:1] == ["code"]:
        # Everything after `code` is Claude Code's, options included: argparse's REMAINDER
        # rejects a leading option (`kimi-proxy code -p "..."`: "unrecognized arguments").
        args = build_parser().parse_args(["code"])
        args.claude_args = argv[1:]
    else:
        args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"kimi-proxy: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    if args.command == "users":
        return run_users(settings, args)
    if args.command == "code":
        from .launcher import run_claude_code

        return run_claude_code(settings, args.claude_args)
    from .doctor import run_doctor

    return run_doctor(settings)
