"""`kimi-proxy code`: start the proxy if none is running, run Claude Code through it, clean up.

The proxy runs in its own session so the terminal's Ctrl-C reaches Claude Code (which uses it to
interrupt a turn) and not the proxy; when Claude Code exits, the proxy this launcher started is
stopped, and one it found already running is left alone. A proxy that another running launcher
started is not shared, since it stops when that launcher's Claude Code exits: this launcher then
starts its own on a free port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path

import httpx

from .config import Settings
from .errors import KEY_ADVICE
from .pool_config import ConfigError, load_pool_spec

CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"
CLAUDE_CODE_VERSION = "2.1.332"
HEALTH_WAIT_SECONDS = 15.0
SMALL_MODEL_ALIAS = "claude-haiku-5-5"
DEFAULT_CONTEXT_WINDOW = 131072  # when the configuration names no model


class LaunchError(Exception):
    """A problem the user can fix; the message says how."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kimi-proxy"


def claude_code_cache(version: str = CLAUDE_CODE_VERSION) -> Path:
    return cache_dir() / f"claude-code-{version}"


def pinned_binary(version: str = CLAUDE_CODE_VERSION) -> Path:
    return claude_code_cache(version) / "node_modules" / ".bin" / "claude"


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


def find_claude() -> str:
    """`claude` from PATH, else the pinned CLI from the npm registry (installed once, cached)."""
    return shutil.which("claude") or str(pinned_claude_code())


def pinned_claude_code(quiet: bool = False, version: str = CLAUDE_CODE_VERSION) -> Path:
    """The pinned Claude Code CLI (or `version` of it) in the cache, installed there with npm
    when missing."""
    cache = claude_code_cache(version)
    binary = pinned_binary(version)
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise LaunchError(
            f"Claude Code is not installed and npm was not found. Install Node.js (with npm), "
            f"or install Claude Code yourself: npm install -g {CLAUDE_CODE_PACKAGE}"
        )
    cache.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(
            f"kimi-proxy: installing {CLAUDE_CODE_PACKAGE}@{version} into {cache} "
            "(first run only)...",
            file=sys.stderr,
        )
    result = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(cache),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"{CLAUDE_CODE_PACKAGE}@{version}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0 or not binary.exists():
        raise LaunchError(
            f"npm could not install {CLAUDE_CODE_PACKAGE}@{version} into {cache}: "
            f"{result.stderr.strip()[-1500:]}"
        )
    return binary


def proxy_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


def probe_health(url: str) -> bool | None:
    """True: a kimi-proxy answers; False: something else holds the port; None: nothing there."""
    try:  # the local proxy: never through HTTP_PROXY
        response = httpx.get(f"{url}/health", timeout=1.0, trust_env=False)
    except httpx.HTTPError:
        return None
    try:
        return response.status_code == 200 and "provider" in response.json()
    except ValueError:
        return False


def start_proxy(settings: Settings, url: str) -> subprocess.Popen[bytes]:
    """Start `kimi-proxy serve` in the background and wait for /health."""
    log_path = Path(os.environ.get("KIMI_LAUNCHER_LOG", "/tmp/kimi-proxy-launcher.log"))
    log_file = log_path.open("ab")
    env = {**os.environ, "KIMI_PROXY_PORT": str(settings.port), "KIMI_PROXY_HOST": settings.host}
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
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-800:]
            raise LaunchError(
                f"kimi-proxy exited during start-up (code {process.returncode}). "
                f"Is port {settings.port} taken? Set KIMI_PROXY_PORT to a free port. "
                f"Log ({log_path}):\n{tail}"
            )
        if probe_health(url):
            return process
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


def without_proxy_for(env: dict[str, str], host: str) -> None:
    """Add `host` to NO_PROXY/no_proxy: Claude Code honours HTTP(S)_PROXY, and a corporate
    proxy cannot reach (or must not see) the local kimi-proxy."""
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h.strip() for h in env.get(name, "").split(",") if h.strip()]
        env[name] = ",".join([*hosts, *(h for h in (host, "localhost") if h not in hosts)])


def context_window(settings: Settings) -> int:
    """The smallest context window of the models Claude Code's main and background requests
    may be routed to (a failover must not meet a window Claude Code has not compacted for)."""
    try:
        spec = load_pool_spec(settings, os.environ, date.today())
    except ConfigError:
        return DEFAULT_CONTEXT_WINDOW
    windows = [
        candidate.limits.context_window
        for route, model in (("default", "claude-sonnet"), ("background", SMALL_MODEL_ALIAS))
        for candidate in spec.candidates(route, model)
    ]
    return min(windows, default=DEFAULT_CONTEXT_WINDOW)


# Never passed on to Claude Code: a real Anthropic key (it would reach the proxy, and make Claude
# Code ask whether to use it), and the switches that send Claude Code to another provider
# (Bedrock, Vertex…) whatever ANTHROPIC_BASE_URL says, as a company's shell profile may set.
UNSET = (
    "ANTHROPIC_API_KEY",
    *(
        f"CLAUDE_CODE_USE_{name}"
        for name in (
            "BEDROCK",
            "VERTEX",
            "FOUNDRY",
            "ANTHROPIC_AWS",
            "ANTHROPIC_GOOGLE_CLOUD",
            "MANTLE",
            "GATEWAY",
        )
    ),
)


def proxy_env(settings: Settings, url: str) -> dict[str, str]:
    """Where Claude Code's requests go. The proxy's token goes as a bearer token, not as an API
    key: Claude Code then skips its first-run connectivity check against api.anthropic.com (it
    exits where that host cannot be reached), asks no "use this API key?" question, and does not
    warn about a claude.ai login. On a gateway with users, `KIMI_USER_KEY` is sent instead:
    the user's own key, so their own limits and usage apply."""
    user_key = settings.user_key.get_secret_value() if settings.user_key else None
    return {
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_AUTH_TOKEN": user_key or settings.auth_token_value or "kimi-proxy",
    }


def claude_env(settings: Settings, url: str, *, own_copy: bool = False) -> dict[str, str]:
    """Claude Code's environment; `own_copy`: it is the launcher's pinned copy, which stays the
    version the launcher was tested with (no self-update)."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(proxy_env(settings, url))
    if own_copy:
        env.setdefault("DISABLE_AUTOUPDATER", "1")
    without_proxy_for(env, httpx.URL(url).host)
    env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    # Auto mode (Claude Code's default permission mode) has each risky action checked. Its server
    # check runs on Anthropic's API only; its built-in check asks the model, through the proxy.
    env.setdefault("CLAUDE_CODE_AUTO_MODE_SERVER", "0")
    # Claude Code takes its claude-* models for 1M-token ones: told the provider's window, it
    # compacts the conversation in time instead of after the provider refuses a request.
    env.setdefault("CLAUDE_CODE_AUTO_COMPACT_WINDOW", str(context_window(settings)))
    # Claude Code's background and title work uses the small model: keep it a haiku id so the
    # proxy routes it to KIMI_SMALL_MODEL.
    env.setdefault("ANTHROPIC_SMALL_FAST_MODEL", SMALL_MODEL_ALIAS)
    env.setdefault("ANTHROPIC_DEFAULT_HAIKU_MODEL", SMALL_MODEL_ALIAS)
    return env


@contextlib.contextmanager
def session_settings(settings: Settings, url: str) -> Iterator[Path]:
    """Claude Code's `--settings` file for one session: only the user can read it (it holds the
    proxy's token), and it is removed afterwards.

    Its `env` outranks the `env` of the user's own settings files, which may point Claude Code
    at another base URL or provider (guides for Kimi put ANTHROPIC_BASE_URL there). And WebFetch
    no longer asks api.anthropic.com about each site first: where that host cannot be reached,
    WebFetch fails, and the lookup tells Anthropic every site fetched.
    """
    content = {
        "skipWebFetchPreflight": True,
        "env": {**proxy_env(settings, url), **dict.fromkeys(UNSET, "")},
        "statusLine": {"type": "command", "command": statusline_command(url), "padding": 0},
    }
    handle, name = tempfile.mkstemp(prefix="kimi-proxy-claude-", suffix=".json")
    path = Path(name)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(content, file)
        yield path
    finally:
        path.unlink(missing_ok=True)


def statusline_command(url: str) -> str:
    """The status line Claude Code runs on every update: what really serves the session."""
    return f"{shlex.quote(sys.executable)} -m kimi_proxy statusline --url {shlex.quote(url)}"


def claude_command(claude: str, claude_args: Sequence[str], settings_file: Path) -> list[str]:
    """Claude Code with the user's arguments; the launcher's `--settings` unless they give one
    (theirs would replace it)."""
    if any(a == "--settings" or a.startswith("--settings=") for a in claude_args):
        return [claude, *claude_args]
    return [claude, "--settings", str(settings_file), *claude_args]


def run_until_exit(command: list[str], env: dict[str, str]) -> int:
    """Claude Code's exit status, the way a shell reports it."""
    claude_code = subprocess.Popen(command, env=env)
    # Ctrl-C is Claude Code's (it interrupts a turn); the launcher waits it out. Ignored only
    # after the start, so Claude Code does not inherit an ignored SIGINT.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = claude_code.wait()
        return 128 - code if code < 0 else code  # killed by signal N: the shell's 128+N
    finally:
        signal.signal(signal.SIGINT, previous)


def run_claude_code(settings: Settings, claude_args: Sequence[str]) -> int:
    try:
        spec = load_pool_spec(settings, os.environ, date.today())
    except ConfigError as exc:
        print(f"kimi-proxy: {exc}", file=sys.stderr)
        return 2
    if not spec.has_keys:
        print(
            "kimi-proxy: no provider API key. Set MOONSHOT_API_KEY, OPENROUTER_API_KEY, "
            "GROQ_API_KEY (or another provider's key variable), or a config file.\n"
            f"  export MOONSHOT_API_KEY=sk-...   # {KEY_ADVICE}",
            file=sys.stderr,
        )
        return 2
    url = proxy_url(settings)
    started: subprocess.Popen[bytes] | None = None
    owner: Path | None = None
    try:
        claude = find_claude()
        state = probe_health(url)
        if state is False:
            raise LaunchError(
                f"Port {settings.port} is taken by another program. "
                "Set KIMI_PROXY_PORT to a free port."
            )
        if state and started_by_a_running_launcher(settings.port):
            settings = settings.model_copy(update={"port": free_port()})
            url, state = proxy_url(settings), None
        elif state is None:
            owner = owner_file(settings.port)
        if state is None:
            started = start_proxy(settings, url)
        if owner is not None:
            owner.parent.mkdir(parents=True, exist_ok=True)
            owner.write_text(str(os.getpid()))
        with session_settings(settings, url) as settings_file:
            command = claude_command(claude, claude_args, settings_file)
            own_copy = Path(claude) == pinned_binary()
            return run_until_exit(command, claude_env(settings, url, own_copy=own_copy))
    except LaunchError as exc:
        print(f"kimi-proxy: {exc}", file=sys.stderr)
        return 1
    finally:
        if owner is not None:
            owner.unlink(missing_ok=True)
        if started is not None:
            with contextlib.suppress(Exception):
                stop_proxy(started)
