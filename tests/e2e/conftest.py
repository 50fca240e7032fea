"""Fixtures for the end-to-end tests: the pinned Claude Code CLI and a way to run it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.claude import (
    ClaudeRun,
    ClaudeUnavailable,
    RunClaude,
    headless_args,
    hermetic_env,
    pinned_claude,
    run_claude,
)


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The pinned CLI (installed into the launcher's cache with npm on first use).

    In CI (CI=true) a missing CLI that cannot be installed fails the run; elsewhere the
    end-to-end tests are skipped with the reason.
    """
    try:
        return pinned_claude()
    except ClaudeUnavailable as exc:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Claude Code's working directory (resolved: Claude Code reports the real path)."""
    path = tmp_path / "project"
    path.mkdir()
    return path.resolve()


@pytest.fixture
def claude(claude_bin: Path, home: Path, project: Path) -> RunClaude:
    """`claude(proxy_url, prompt, *cli_args, timeout=60, **env)`: one headless run."""

    def run(url: str, prompt: str, *args: str, timeout: float = 60.0, **env: str) -> ClaudeRun:
        return run_claude(
            [str(claude_bin), *headless_args(prompt, *args)],
            cwd=project,
            env=hermetic_env(home, url, **env),
            timeout=timeout,
        )

    return run
