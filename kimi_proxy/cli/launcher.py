"""`kimi-proxy code` (and `./kimi.sh`): find or start what serves Claude Code, run it, clean up.

The setup is decided by `launch_plan.decide` (the team gateway, a proxy already running, or a
proxy started here) and said in one line. A proxy started here runs in its own session, so the
terminal's Ctrl-C reaches Claude Code (which uses it to interrupt a turn) and not the proxy; it
dies with the launcher: when Claude Code exits, when the launcher gets SIGHUP or SIGTERM (passed
on to Claude Code first), and, should the launcher be killed outright, by itself (it watches
its parent: `KIMI_LAUNCHER_PID`). A proxy found already running is left alone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import httpx

from kimi_proxy.config.pool_file import ConfigError, load_pool_spec
from kimi_proxy.config.private_files import open_private
from kimi_proxy.config.settings import LOOPBACK_HOSTS, Settings, state_dir
from kimi_proxy.providers.catalog import load_catalog
from kimi_proxy.providers.spec import DEFAULT_CONTEXT_WINDOW, PoolSpec

from .claude_code import (
    LaunchError,
    Target,
    cache_dir,
    claude_command,
    claude_env,
    find_claude,
    given_settings,
    ours,
    pinned_binary,
    write_session_settings,
)
from .launch_plan import Found, NoSetup, Plan, Running, decide

HEALTH_WAIT_SECONDS = 15.0
GATEWAY_TIMEOUT = 10.0


def owner_file(port: int) -> Path:
    """Names the launcher (by pid) that started the proxy on `port` and will stop it."""
    return cache_dir() / f"launcher-{port}.pid"


def started_by_a_running_launcher(port: int) -> bool:
    try:
        pid = int(owner_file(port).read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # its launcher is gone: the proxy was left to run, as one started by hand
    except PermissionError:
        pass  # alive, another user's
    return True


def free_port() -> int:
    """A loopback port nothing listens on (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proxy_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


def health(url: str, timeout: float = 1.0) -> dict[str, Any] | Literal["nothing", "other"]:
    """A kimi-proxy's `/health` answer; `other` when something else answers, `nothing` when
    nobody does."""
    try:
        response = httpx.get(f"{url}/health", timeout=timeout, trust_env=not _loopback(url))
    except httpx.HTTPError:
        return "nothing"
    try:
        data = response.json()
    except ValueError:
        return "other"
    if response.status_code == 200 and isinstance(data, dict) and "families" in data:
        return data
    return "other"


def _loopback(url: str) -> bool:
    return httpx.URL(url).host in LOOPBACK_HOSTS


def context_window(spec: PoolSpec | None) -> int:
    return DEFAULT_CONTEXT_WINDOW if spec is None else spec.smallest_window()


def look(settings: Settings) -> tuple[Found, PoolSpec | None]:
    """What the decision needs: the gateway variables, the port, the local pool."""
    spec: PoolSpec | None = None
    notes: tuple[str, ...] = ()
    try:
        spec = load_pool_spec(settings, os.environ, date.today())
        notes = spec.notes
    except ConfigError:
        if settings.gateway_url is None:
            raise
    on_port: Running | Literal["nothing", "other"] = "nothing"
    if settings.gateway_url is None:
        answer = health(proxy_url(settings))
        if isinstance(answer, dict):
            window = answer.get("context_window")
            on_port = Running(
                str(answer.get("config_id")),
                started_by_a_running_launcher(settings.port),
                window if isinstance(window, int) and window > 0 else None,
            )
        else:
            on_port = answer
    found = Found(
        gateway_url=settings.gateway_url,
        user_key=settings.user_key is not None or settings.auth_token is not None,
        port=settings.port,
        on_port=on_port,
        usable=spec is not None and spec.usable,
        config_id=spec.config_id() if spec is not None else "",
        key_variables=tuple(e.key_env for e in load_catalog().providers.values() if e.key_env),
        config_file=str(settings.config) if settings.config is not None else None,
        config_notes=notes,
    )
    return found, spec


def gateway_target(settings: Settings) -> Target:
    """The team gateway, checked: it answers `/health` and takes the user's key."""
    url = (settings.gateway_url or "").rstrip("/")
    key = settings.user_key or settings.auth_token
    assert key is not None
    answer = health(url, timeout=GATEWAY_TIMEOUT)
    if not isinstance(answer, dict):
        why = "nothing answers there" if answer == "nothing" else "it is not a kimi-proxy"
        raise LaunchError(
            f"the team gateway {url} cannot be used: {why} ({url}/health). Check "
            "KIMI_GATEWAY_URL, your network or VPN, or ask your team lead."
        )
    headers = {"authorization": f"Bearer {key.get_secret_value()}"}
    try:
        check = httpx.get(f"{url}/v1/models", headers=headers, timeout=GATEWAY_TIMEOUT)
    except httpx.HTTPError as exc:
        raise LaunchError(f"the team gateway {url} stopped answering: {exc}.") from None
    if check.status_code in (401, 403):
        raise LaunchError(f"the team gateway refused your key: {_message(check)}")
    window = answer.get("context_window")
    return Target(
        url,
        key.get_secret_value(),
        window if isinstance(window, int) and window > 0 else DEFAULT_CONTEXT_WINDOW,
        "gateway",
    )


def _message(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(response.json()["error"]["message"])
    return f"HTTP {response.status_code}"


class PortTaken(LaunchError):
    """Another program answered on the port while the proxy was starting there."""


def start_proxy(settings: Settings, url: str) -> subprocess.Popen[bytes]:
    """Start `kimi-proxy serve` in the background and wait until its /health shows the launch
    id given to it: whatever else answers on the port is not trusted with the user's key."""
    launch_id = secrets.token_hex(16)
    log_path = Path(os.environ.get("KIMI_LAUNCHER_LOG") or state_dir() / "launcher.log")
    log_file = os.fdopen(open_private(log_path, append=True), "ab")
    env = {
        **os.environ,
        "KIMI_PROXY_PORT": str(settings.port),
        "KIMI_PROXY_HOST": settings.host,
        "KIMI_LAUNCHER_PID": str(os.getpid()),
        "KIMI_LAUNCH_ID": launch_id,
    }
    if settings.config is not None:
        env["KIMI_PROXY_CONFIG"] = str(settings.config)
    process = subprocess.Popen(
        [sys.executable, "-m", "kimi_proxy", "serve"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    log_file.close()
    deadline = time.monotonic() + HEALTH_WAIT_SECONDS
    stranger = False
    while time.monotonic() < deadline:
        answer = health(url)
        if isinstance(answer, dict) and answer.get("launch_id") == launch_id:
            return process
        stranger = stranger or answer != "nothing"
        if process.poll() is not None:
            if stranger:
                raise PortTaken(f"another program answers on port {settings.port}")
            tail = log_path.read_text(errors="replace")[-800:]
            raise LaunchError(
                f"kimi-proxy exited during start-up (code {process.returncode}). "
                f"Log ({log_path}):\n{tail}"
            )
        time.sleep(0.1)
    stop_proxy(process)
    raise LaunchError(
        f"kimi-proxy did not answer {url}/health within {HEALTH_WAIT_SECONDS:.0f} s; "
        f"see {log_path}."
    )


def stop_proxy(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Hangup(Exception):
    """The launcher got SIGHUP or SIGTERM: Claude Code has it too; clean up and go."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_until_exit(command: list[str], env: dict[str, str]) -> int:
    """Claude Code's exit status, the way a shell reports it. Ctrl-C is Claude Code's (it
    interrupts a turn): the launcher waits it out. SIGHUP and SIGTERM are passed on."""
    claude_code = subprocess.Popen(command, env=env)

    def pass_on(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            claude_code.send_signal(signum)
        raise Hangup(signum)

    # Set only after the start, so Claude Code does not inherit an ignored SIGINT.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGHUP: signal.signal(signal.SIGHUP, pass_on),
        signal.SIGTERM: signal.signal(signal.SIGTERM, pass_on),
    }
    try:
        code = claude_code.wait()
        return 128 - code if code < 0 else code  # killed by signal N: the shell's 128+N
    except Hangup as hangup:
        with contextlib.suppress(subprocess.TimeoutExpired):
            claude_code.wait(timeout=5)
        return 128 + hangup.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_claude_code(settings: Settings, claude_args: Sequence[str]) -> int:
    try:
        found, spec = look(settings)
    except ConfigError as exc:
        print(f"kimi-proxy: {exc}", file=sys.stderr)
        return 2
    plan = decide(found)
    if isinstance(plan, NoSetup):
        print(f"kimi-proxy: {plan.message}", file=sys.stderr)
        return 2
    started: subprocess.Popen[bytes] | None = None
    owner: Path | None = None
    try:
        claude = find_claude()
        print(f"kimi-proxy: {plan.line}", file=sys.stderr)
        target, started, owner = _serve(settings, plan, found, spec)
        path = write_session_settings(target, ours(given_settings(claude_args)))
        command = claude_command(claude, claude_args, path)
        own_copy = Path(claude) == pinned_binary()
        return run_until_exit(command, claude_env(target, own_copy=own_copy))
    except LaunchError as exc:
        print(f"kimi-proxy: {exc}", file=sys.stderr)
        return 2
    finally:
        if owner is not None:
            owner.unlink(missing_ok=True)
        if started is not None:
            with contextlib.suppress(Exception):
                stop_proxy(started)


def _serve(
    settings: Settings, plan: Plan, found: Found, spec: PoolSpec | None
) -> tuple[Target, subprocess.Popen[bytes] | None, Path | None]:
    """The target of `plan`, and the proxy started for it (with its owner file) if any."""
    if plan.mode == "gateway":
        return gateway_target(settings), None, None
    token = settings.auth_token_value or "kimi-proxy"
    if plan.mode == "running":
        assert isinstance(found.on_port, Running)
        window = found.on_port.context_window or context_window(spec)
        token = settings.user_key.get_secret_value() if settings.user_key else token
        return Target(proxy_url(settings), token, window, str(settings.port)), None, None
    if plan.new_port:
        settings = settings.model_copy(update={"port": free_port()})
    url = proxy_url(settings)
    try:
        started = start_proxy(settings, url)
    except PortTaken as taken:  # taken between the look and the start: a free port, once
        settings = settings.model_copy(update={"port": free_port()})
        print(f"kimi-proxy: {taken}; starting on port {settings.port} instead.", file=sys.stderr)
        url = proxy_url(settings)
        started = start_proxy(settings, url)
    owner = owner_file(settings.port)
    owner.parent.mkdir(parents=True, exist_ok=True)
    owner.write_text(str(os.getpid()))
    return Target(url, token, context_window(spec), str(settings.port)), started, owner
