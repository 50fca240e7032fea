"""What the launcher hands Claude Code: its own NO_PROXY entries added, the user's kept."""

from __future__ import annotations

import pytest

from kimi_proxy.config import load_settings
from kimi_proxy.launcher import claude_env


def test_claude_code_reaches_the_local_proxy_directly_and_keeps_the_users_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "intranet.corp, 10.0.0.0/8")
    monkeypatch.delenv("no_proxy", raising=False)
    env = claude_env(load_settings(api_key="x"), "http://127.0.0.1:8090")
    assert env["NO_PROXY"] == "intranet.corp,10.0.0.0/8,127.0.0.1,localhost"
    assert env["no_proxy"] == "127.0.0.1,localhost"
    assert env["HTTPS_PROXY"] == "http://proxy.corp:3128", "the rest of its traffic keeps the proxy"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8090"


def test_entries_already_there_are_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    env = claude_env(load_settings(api_key="x"), "http://127.0.0.1:8090")
    assert env["no_proxy"] == "localhost,127.0.0.1"
