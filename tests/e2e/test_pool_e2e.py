"""The real Claude Code through a pool of two scripted providers (a config file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.claude import RunClaude
from support.model import ScriptedModel
from support.providers import pooled_proxy
from support.upstream import error

pytestmark = pytest.mark.e2e

TWO = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-1"]
[[provider]]
name = "beta"
base_url = "{BETA_URL}"
keys = ["beta-key-1"]
[family.kimi]
candidates = ["alpha:kimi-a", "beta:kimi-b"]
"""


def test_the_session_completes_when_the_first_provider_answers_429(
    claude: RunClaude, project: Path, tmp_path: Path
) -> None:
    limited = error(429, "Rate limit reached (scripted)", headers={"retry-after": "60"})
    with pooled_proxy(
        tmp_path, TWO, {"alpha": lambda b, n: limited, "beta": ScriptedModel()}
    ) as pool:
        run = claude(pool.url, "E2E-FILES: make notes, change them, run a command")
    run.assert_success("Done. Bash printed e2e-42; reading the missing file failed.")
    assert run.retries == [], "Claude Code saw an error"
    assert (project / "notes.txt").read_text() == "alpha\ngamma\n"
    # alpha was tried once, then cooled down for its retry-after: every step went to beta.
    assert len(pool.providers["alpha"].requests) == 1
    assert len(pool.providers["beta"].requests) == 5


def test_with_no_key_left_claude_code_stops_at_once_and_says_what_to_fix(
    claude: RunClaude, tmp_path: Path
) -> None:
    """Both keys rejected: a 402 naming them, which Claude Code shows at once — a 401 it would
    retry for about three minutes (FINDINGS.md), here with its default 10 retries."""
    with pooled_proxy(
        tmp_path,
        TWO,
        {
            "alpha": lambda b, n: error(401, "Invalid API Key"),
            "beta": lambda b, n: error(403, "no"),
        },
    ) as pool:
        run = claude(pool.url, "E2E-HELLO: hi", CLAUDE_CODE_MAX_RETRIES="10", timeout=120)
    result = run.result
    assert run.returncode != 0 and result["is_error"] is True, run.describe()
    assert result["api_error_status"] == 402, run.describe()
    assert "No provider key is left" in result["result"]
    assert "alpha key" in result["result"] and "beta key" in result["result"]
    assert run.retries == []
    assert len(pool.providers["alpha"].requests) == 1 and len(pool.providers["beta"].requests) == 1
    assert run.seconds < 20, run.describe()
