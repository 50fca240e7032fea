"""What the launcher hands Claude Code: its own NO_PROXY entries added, the user's kept."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date
from pathlib import Path

import pytest

from kimi_proxy.cli.claude_code import (
    Target,
    claude_command,
    claude_env,
    settings_file,
    write_session_settings,
)
from kimi_proxy.cli.launcher import context_window, owner_file, started_by_a_running_launcher
from kimi_proxy.config.pool_file import load_pool_spec
from kimi_proxy.config.settings import load_settings

LOCAL = Target("http://127.0.0.1:8090", "kimi-proxy", 262144, "8090")


def window_of(**settings: str) -> int:
    return context_window(load_pool_spec(load_settings(**settings), {}, date.today()))


def test_claude_code_reaches_the_local_proxy_directly_and_keeps_the_users_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "intranet.corp, 10.0.0.0/8")
    monkeypatch.delenv("no_proxy", raising=False)
    env = claude_env(LOCAL)
    assert env["NO_PROXY"] == "intranet.corp,10.0.0.0/8,127.0.0.1,localhost"
    assert env["no_proxy"] == "127.0.0.1,localhost"
    assert env["HTTPS_PROXY"] == "http://proxy.corp:3128", "the rest of its traffic keeps the proxy"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8090"


def test_entries_already_there_are_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    env = claude_env(LOCAL)
    assert env["no_proxy"] == "localhost,127.0.0.1"


def test_claude_code_gets_the_proxy_token_as_a_bearer_token_and_never_a_real_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bearer token spares a first run Claude Code's check of api.anthropic.com and its "use
    this API key?" question; a real Anthropic key in the environment never goes to the proxy."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-real-key")
    env = claude_env(Target("http://127.0.0.1:1", "proxy-secret", 1000, "1"))
    assert "ANTHROPIC_API_KEY" not in env
    assert env["ANTHROPIC_AUTH_TOKEN"] == "proxy-secret"


def test_auto_mode_uses_claude_codes_own_check_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLAUDE_CODE_AUTO_MODE_SERVER", raising=False)
    env = claude_env(LOCAL)
    assert env["CLAUDE_CODE_AUTO_MODE_SERVER"] == "0"
    monkeypatch.setenv("CLAUDE_CODE_AUTO_MODE_SERVER", "1")
    env = claude_env(LOCAL)
    assert env["CLAUDE_CODE_AUTO_MODE_SERVER"] == "1"


def test_claude_code_compacts_within_the_providers_context_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claude Code would size the conversation for a 1M-token model; it is told the window of
    the models the proxy uses (the smaller one: the small model serves subagents)."""
    assert claude_env(LOCAL)["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "262144"
    assert window_of(api_key="x", model="moonshotai/kimi-k2-instruct-0905") == 262144
    older = window_of(
        api_key="x",
        model="moonshotai/kimi-k2-instruct-0905",
        small_model="moonshotai/kimi-k2-instruct",
    )
    assert older == 131072


def test_the_session_settings_pin_the_proxy_and_skip_the_webfetch_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claude Code's `--settings` outrank the `env` of the user's own settings files (which may
    name another base URL or provider); the file holds the token, so only the user reads it,
    in the user's own state folder. It stays: Claude Code's resume command names it."""
    path = write_session_settings(Target("http://127.0.0.1:8090", "proxy-secret", 1000, "8090"))
    assert path == settings_file("8090")
    assert str(path).startswith(os.environ["XDG_STATE_HOME"])
    assert path.stat().st_mode & 0o777 == 0o600
    content = json.loads(path.read_text())
    command = claude_command("claude", ["-p", "hi"], path)
    assert command == ["claude", "--settings", str(path), "-p", "hi"]
    assert content["skipWebFetchPreflight"] is True
    env = content["env"]
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8090"
    assert env["ANTHROPIC_AUTH_TOKEN"] == "proxy-secret"
    assert env["ANTHROPIC_API_KEY"] == env["CLAUDE_CODE_USE_BEDROCK"] == ""
    mine = ["--settings", "/home/me/kimi.json", "-p", "hi"]
    assert claude_command("claude", mine, path) == ["claude", *mine]
    assert claude_command("claude", ["--settings={}"], path) == ["claude", "--settings={}"]


def test_a_proxy_is_shared_only_when_no_running_launcher_will_stop_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert not started_by_a_running_launcher(8090)  # started by hand: shared
    owner_file(8090).parent.mkdir(parents=True)
    owner_file(8090).write_text(str(os.getpid()))
    assert started_by_a_running_launcher(8090)
    owner_file(8090).write_text(str(_a_pid_that_has_exited()))
    assert not started_by_a_running_launcher(8090)  # its launcher died: left running, shared


def _a_pid_that_has_exited() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_launchers_own_claude_code_stays_the_pinned_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DISABLE_AUTOUPDATER", raising=False)
    assert claude_env(LOCAL, own_copy=True)["DISABLE_AUTOUPDATER"] == "1"
    assert "DISABLE_AUTOUPDATER" not in claude_env(LOCAL)


def test_a_team_gateway_keeps_the_company_proxy_and_gets_the_users_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    env = claude_env(Target("https://kimi.example.com", "kpu_mine", 262144, "gateway"))
    assert env["ANTHROPIC_AUTH_TOKEN"] == "kpu_mine"
    assert env["ANTHROPIC_BASE_URL"] == "https://kimi.example.com"
    assert "kimi.example.com" not in env.get("NO_PROXY", "")


def test_a_resumed_sessions_settings_file_is_rewritten_for_this_session() -> None:
    """Claude Code's resume command names the settings file of the session it ended; given
    back to ./kimi.sh, that file is brought up to date (the proxy may be on another port)."""
    old = write_session_settings(Target("http://127.0.0.1:4444", "t", 1000, "4444"))
    new = Target("http://127.0.0.1:5555", "t", 1000, "5555")
    write_session_settings(new, [old])
    assert json.loads(old.read_text())["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:5555"


def test_claude_codes_model_picker_lists_the_proxys_families() -> None:
    """`/model` shows the families only with gateway model discovery on (Claude Code then
    asks `GET /v1/models?limit=1000`; tests/e2e shows the request and the answer)."""
    assert claude_env(LOCAL)["CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY"] == "1"
