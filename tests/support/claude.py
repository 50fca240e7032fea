"""The real Claude Code CLI, pinned and run headless, for end-to-end tests.

`pinned_claude()` returns the CLI the launcher would install (`claude_code_cache()`), installing it
with npm when it is missing. It never takes `claude` from PATH: the tests must run the version
whose behaviour tests/fixtures/claude_code/FINDINGS.md describes — unless `KIMI_E2E_CLAUDE_CODE`
names another version (`2.1.332`, or `latest`): `bench/compat.sh` runs the end-to-end suite
against any version that way, without moving the pin.

`run_claude()` runs `claude -p PROMPT --output-format stream-json --verbose` hermetically (fresh
HOME, no nonessential traffic, bounded retries and time) and parses what it printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kimi_proxy.cli.claude_code import (
    CLAUDE_CODE_PACKAGE,
    CLAUDE_CODE_VERSION,
    LaunchError,
    claude_code_cache,
    pinned_claude_code,
)

ALLOWED_TOOLS = "Bash Read Write Edit ToolSearch NotebookEdit"


class ClaudeUnavailable(Exception):
    """The pinned CLI is not installed and cannot be installed here (the message says why)."""


def e2e_claude_version() -> str:
    """The Claude Code version the end-to-end tests run: the pin, or `KIMI_E2E_CLAUDE_CODE`."""
    wanted = os.environ.get("KIMI_E2E_CLAUDE_CODE", "").strip() or CLAUDE_CODE_VERSION
    if wanted != "latest":
        return wanted
    found = subprocess.run(
        ["npm", "view", CLAUDE_CODE_PACKAGE, "version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if found.returncode != 0 or not found.stdout.strip():
        raise ClaudeUnavailable(f"npm could not tell the latest Claude Code: {found.stderr[-500:]}")
    return found.stdout.strip()


def pinned_claude() -> Path:
    """The pinned Claude Code binary in the launcher's cache, installed with npm if missing."""
    version = e2e_claude_version()
    cache = claude_code_cache(version)
    try:
        binary = pinned_claude_code(quiet=True, version=version)
    except LaunchError as exc:
        raise ClaudeUnavailable(
            f"The end-to-end tests need Claude Code {version} in {cache}: {exc}"
        ) from None
    printed = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    if version not in printed.stdout:
        raise ClaudeUnavailable(
            f"{binary} is not Claude Code {version}: "
            f"{printed.stdout.strip()!r} {printed.stderr.strip()[-500:]!r}. "
            f"Delete {cache} and run the tests again to reinstall it."
        )
    return binary


def hermetic_env(home: Path, base_url: str | None = None, **extra: str) -> dict[str, str]:
    """An environment for Claude Code with nothing of the caller's: fresh HOME, no real keys."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "1",
    }
    if base_url is not None:
        env["ANTHROPIC_BASE_URL"] = base_url
        env["ANTHROPIC_API_KEY"] = "e2e-any-key"
    env.update(extra)
    return env


def as_from_a_terminal() -> None:
    """For a process started the way a terminal starts one: Ctrl-C's SIGINT not ignored. A
    test run started in the background by a non-interactive shell inherits an ignored SIGINT,
    which `exec` passes on to every child (Claude Code would never see Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def headless_args(prompt: str, *extra: str) -> list[str]:
    return [
        "-p",
        prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        ALLOWED_TOOLS,
        *extra,
    ]


@dataclass
class ClaudeRun:
    """What one headless Claude Code run printed, parsed."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    lines: list[dict[str, Any]] = field(default_factory=list)
    junk: list[str] = field(default_factory=list)  # stdout lines that are not JSON

    @classmethod
    def parse(cls, returncode: int, stdout: str, stderr: str, seconds: float) -> ClaudeRun:
        run = cls(returncode, stdout, stderr, seconds)
        for raw in stdout.splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                run.junk.append(raw)
                continue
            if isinstance(line, dict):
                run.lines.append(line)
            else:
                run.junk.append(raw)
        return run

    def of_type(self, kind: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line.get("type") == kind and (subtype is None or line.get("subtype") == subtype)
        ]

    @property
    def init(self) -> dict[str, Any]:
        found = self.of_type("system", "init")
        assert found, f"no system/init line\n{self.describe()}"
        return found[0]

    @property
    def result(self) -> dict[str, Any]:
        found = self.of_type("result")
        assert len(found) == 1, f"expected one result line, got {len(found)}\n{self.describe()}"
        return found[0]

    @property
    def assistant_blocks(self) -> list[dict[str, Any]]:
        """Content blocks of the assistant lines, in order (Claude Code prints one per block)."""
        return [b for line in self.of_type("assistant") for b in line["message"]["content"]]

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [b for b in self.assistant_blocks if b.get("type") == "tool_use"]

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        blocks = [b for line in self.of_type("user") for b in line["message"]["content"]]
        return [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]

    @property
    def retries(self) -> list[dict[str, Any]]:
        return self.of_type("system", "api_retry")

    def describe(self, limit: int = 6000) -> str:
        """For assertion messages: exit code, time, stderr and the tail of stdout."""
        return (
            f"exit code {self.returncode} after {self.seconds:.1f} s\n"
            f"stderr: {self.stderr[-1500:]}\nstdout (tail): {self.stdout[-limit:]}"
        )

    def assert_success(self, expected_text: str | None = None) -> dict[str, Any]:
        result = self.result
        assert self.returncode == 0, self.describe()
        assert result["is_error"] is False, self.describe()
        assert result["subtype"] == "success", self.describe()
        assert not self.junk, f"non-JSON lines on stdout: {self.junk[:5]}"
        if expected_text is not None:
            assert result["result"] == expected_text, self.describe()
        return result


def run_claude(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 60.0,
) -> ClaudeRun:
    """Run a command that ends in Claude Code (the CLI itself, kimi.sh, `kimi-proxy code`).

    A run that outlives `timeout` fails the test (with what it printed so far).
    """
    started = time.monotonic()
    # A session of its own, so a run that hangs is killed with everything it started.
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"{command[0]} did not finish within {timeout:.0f} s\n"
            f"stderr: {stderr[-1500:]}\nstdout (tail): {stdout[-4000:]}"
        ) from None
    return ClaudeRun.parse(process.returncode, stdout, stderr, time.monotonic() - started)


#: The `claude` fixture: `claude(proxy_url, prompt, *cli_args, timeout=60, **env)`.
RunClaude = Callable[..., ClaudeRun]
