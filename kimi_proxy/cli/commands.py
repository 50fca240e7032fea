"""`kimi-proxy serve | code | doctor | users | usage` — the commands (`cli.py` dispatches to
them; `users` and `usage` live in `gateway/commands.py`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import date
from typing import Any

from pydantic import AliasChoices, ValidationError
from pydantic_core import PydanticUndefined

from kimi_proxy.config.pool_file import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    load_gateway,
    load_pool_spec,
    load_search,
)
from kimi_proxy.config.settings import LOOPBACK_HOSTS, Settings, load_settings, settings_to_env
from kimi_proxy.gateway.commands import add_parsers as add_gateway_parsers
from kimi_proxy.gateway.commands import run_audit, run_usage, run_users
from kimi_proxy.gateway.users import DEFAULT_USERS_FILE
from kimi_proxy.server.security import weak_token


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

    from kimi_proxy.server.app import (
        configure_logging,
        create_app,
        proxy_state,
        tune_garbage_collector,
    )
    from kimi_proxy.server.drain import DRAIN_LEFTOVER_SECONDS, DrainingServer
    from kimi_proxy.server.wire import BoundedHttpToolsProtocol

    if settings.host not in LOOPBACK_HOSTS and settings.auth_token is None:
        print(
            f"kimi-proxy: refusing to bind {settings.host}: binding beyond localhost requires "
            "KIMI_PROXY_AUTH_TOKEN (clients then send it as x-api-key or a Bearer token).",
            file=sys.stderr,
        )
        return 2
    if why := weak_token(settings.auth_token_value, settings.host not in LOOPBACK_HOSTS):
        print(
            f"kimi-proxy: refusing to start: {why}. Make one with: openssl rand -hex 32",
            file=sys.stderr,
        )
        return 2
    try:
        spec = load_pool_spec(settings, os.environ, date.today())
        gateway = load_gateway(settings, os.environ)
        load_search(settings, os.environ)  # a [search] that cannot work stops here, said why
    except ConfigError as exc:
        print(f"kimi-proxy: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, spec, gateway)
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
        "http": BoundedHttpToolsProtocol,  # httptools, the request head bounded
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "server_header": False,
    }
    if settings.workers > 1:  # stateless workers: each process builds its app from the env
        os.environ.update(settings_to_env(settings))
        uvicorn.run(
            "kimi_proxy.server.app:app_from_env",
            factory=True,
            workers=settings.workers,
            timeout_graceful_shutdown=int(settings.drain_seconds),
            **options,
        )
        return 0
    app = create_app(settings, spec=spec, gateway=gateway)
    tune_garbage_collector()
    exit_with_launcher(os.environ.get("KIMI_LAUNCHER_PID"))
    config = uvicorn.Config(app, timeout_graceful_shutdown=DRAIN_LEFTOVER_SECONDS, **options)
    DrainingServer(config, proxy_state(app), settings.drain_seconds).run()
    return 0


def exit_with_launcher(pid: str | None) -> None:
    """A proxy `kimi-proxy code` started shuts down (SIGTERM: a drain) once that launcher is
    gone, however it went: killed outright too, when it could not stop the proxy itself."""
    if not pid or not pid.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(pid):
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()


def run_gateway_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        gateway = load_gateway(settings, os.environ)
    except ConfigError as exc:
        print(f"kimi-proxy: {exc}", file=sys.stderr)
        return 2
    if args.command == "usage":
        return run_usage(gateway, args)
    if args.command == "audit":
        return run_audit(gateway, settings.users_file or DEFAULT_USERS_FILE, args)
    named = getattr(args, "users_file", None) is not None or bool(os.environ.get("KIMI_USERS_FILE"))
    return run_users(gateway, settings.users_file or DEFAULT_USERS_FILE, args, file_named=named)


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
    add_gateway_parsers(sub)
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
    if args.command in ("users", "teams", "usage", "audit"):
        return run_gateway_command(settings, args)
    if args.command == "code":
        from .launcher import run_claude_code

        return run_claude_code(settings, args.claude_args)
    from .doctor import run_doctor

    return run_doctor(settings)
