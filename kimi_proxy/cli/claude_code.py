"""Claude Code as the launcher runs it: the pinned CLI, its environment, its settings file.

What Claude Code talks to is a `Target`: the local proxy's URL and token, or the team gateway's
URL and the user's key, and the context window of the models behind it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kimi_proxy.config.private_files import open_private
from kimi_proxy.config.settings import LOOPBACK_HOSTS, state_dir

CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"
CLAUDE_CODE_VERSION = "2.1.332"
SMALL_MODEL_ALIAS = "claude-haiku-5-5"


class LaunchError(Exception):
    """A problem the user can fix; the message says how."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where Claude Code's requests go."""

    url: str
    token: str = field(repr=False)  # the proxy's token or the user's key: sent as a bearer
    context_window: int
    tag: str  # names the session's settings file: `gateway`, or the local port


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kimi-proxy"


def claude_code_cache(version: str = CLAUDE_CODE_VERSION) -> Path:
    return cache_dir() / f"claude-code-{version}"


def pinned_binary(version: str = CLAUDE_CODE_VERSION) -> Path:
    return claude_code_cache(version) / "node_modules" / ".bin" / "claude"


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


def without_proxy_for(env: dict[str, str], host: str) -> None:
    """Add `host` to NO_PROXY/no_proxy: Claude Code honours HTTP(S)_PROXY, and a corporate
    proxy cannot reach (or must not see) the local kimi-proxy."""
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h.strip() for h in env.get(name, "").split(",") if h.strip()]
        env[name] = ",".join([*hosts, *(h for h in (host, "localhost") if h not in hosts)])


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


def target_env(target: Target) -> dict[str, str]:
    """Where Claude Code's requests go. The token goes as a bearer token, not as an API key:
    Claude Code then skips its first-run connectivity check against api.anthropic.com (it exits
    where that host cannot be reached), asks no "use this API key?" question, and does not warn
    about a claude.ai login. On a gateway with users it is the user's own key, so their own
    limits and usage apply."""
    return {"ANTHROPIC_BASE_URL": target.url, "ANTHROPIC_AUTH_TOKEN": target.token}


def claude_env(target: Target, *, own_copy: bool = False) -> dict[str, str]:
    """Claude Code's environment; `own_copy`: it is the launcher's pinned copy, which stays the
    version the launcher was tested with (no self-update)."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(target_env(target))
    if own_copy:
        env.setdefault("DISABLE_AUTOUPDATER", "1")
    host = httpx.URL(target.url).host
    if host in LOOPBACK_HOSTS:  # a team gateway keeps the company proxy, if it needs one
        without_proxy_for(env, host)
    env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    # Auto mode (Claude Code's default permission mode) has each risky action checked. Its server
    # check runs on Anthropic's API only; its built-in check asks the model, through the proxy.
    env.setdefault("CLAUDE_CODE_AUTO_MODE_SERVER", "0")
    # Claude Code takes its claude-* models for 1M-token ones: told the provider's window, it
    # compacts the conversation in time instead of after the provider refuses a request.
    env.setdefault("CLAUDE_CODE_AUTO_COMPACT_WINDOW", str(target.context_window))
    # Claude Code's background and title work uses the small model: keep it a haiku id so the
    # proxy routes it to the background route.
    env.setdefault("ANTHROPIC_SMALL_FAST_MODEL", SMALL_MODEL_ALIAS)
    env.setdefault("ANTHROPIC_DEFAULT_HAIKU_MODEL", SMALL_MODEL_ALIAS)
    # `/model` lists what the proxy serves: every family as `claude-<family>` (GET /v1/models).
    env.setdefault("CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY", "1")
    return env


def settings_file(tag: str) -> Path:
    return state_dir() / f"claude-settings-{tag}.json"


def write_session_settings(target: Target, extra: Sequence[Path] = ()) -> Path:
    """Claude Code's `--settings` file for this target, in the user's own state folder and
    readable by the user only (it holds the token). It is kept after the session: the resume
    command Claude Code prints at exit names it. `extra`: files of ours the user passed with
    `--settings` (an earlier session's, from such a resume command), rewritten for this target.

    Its `env` outranks the `env` of the user's own settings files, which may point Claude Code
    at another base URL or provider (guides for Kimi put ANTHROPIC_BASE_URL there). And WebFetch
    no longer asks api.anthropic.com about each site first: where that host cannot be reached,
    WebFetch fails, and the lookup tells Anthropic every site fetched.
    """
    content = json.dumps(
        {
            "skipWebFetchPreflight": True,
            "env": {**target_env(target), **dict.fromkeys(UNSET, "")},
            "statusLine": {
                "type": "command",
                "command": statusline_command(target.url),
                "padding": 0,
            },
        }
    )
    path = settings_file(target.tag)
    for file in (path, *extra):
        with os.fdopen(open_private(file), "w") as out:
            out.write(content)
    return path


def statusline_command(url: str) -> str:
    """The status line Claude Code runs on every update: what really serves the session."""
    return f"{shlex.quote(sys.executable)} -m kimi_proxy statusline --url {shlex.quote(url)}"


def given_settings(claude_args: Sequence[str]) -> list[str]:
    """The `--settings` values among the user's arguments."""
    found: list[str] = []
    for index, arg in enumerate(claude_args):
        if arg == "--settings" and index + 1 < len(claude_args):
            found.append(claude_args[index + 1])
        elif arg.startswith("--settings="):
            found.append(arg.split("=", 1)[1])
    return found


def ours(values: Sequence[str]) -> list[Path]:
    """Which of these `--settings` values are settings files the launcher wrote."""
    folder = state_dir().resolve()
    paths = [Path(v).expanduser() for v in values]
    return [
        p
        for p in paths
        if p.name.startswith("claude-settings-") and p.parent.resolve() == folder and p.is_file()
    ]


def claude_command(claude: str, claude_args: Sequence[str], settings: Path) -> list[str]:
    """Claude Code with the user's arguments; the launcher's `--settings` unless they give one
    (theirs would replace it)."""
    if given_settings(claude_args):
        return [claude, *claude_args]
    return [claude, "--settings", str(settings), *claude_args]
