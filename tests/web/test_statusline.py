"""`kimi-proxy statusline`: from the JSON Claude Code passes (captured from 2.1.328), the line
names what really served the session — provider, model, context use against the real window,
the key's tokens a minute, today's cost at the provider's prices — and says so briefly when the
proxy is not running."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from support.providers import pooled_proxy
from support.upstream import Stream, chunk

from kimi_proxy.cli.launcher import free_port

CAPTURED = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "claude_code" / "statusline_input.json").read_text()
)
CONFIG = """
[[provider]]
name = "moonshot"
base_url = "{MOONSHOT_URL}"
keys = ["moonshot-key-1"]
[family.kimi]
candidates = ["moonshot:kimi-k2.6"]
"""


def statusline(url: str, data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_proxy", "statusline", "--url", url],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=30,
    )


def answer(body: dict[str, Any], n: int) -> Stream:
    usage = {
        "prompt_tokens": 41_000,
        "completion_tokens": 2_000,
        "prompt_tokens_details": {"cached_tokens": 1_000},
    }
    headers = {
        "x-ratelimit-limit-tokens": "400000",
        "x-ratelimit-remaining-tokens": "248000",
        "x-ratelimit-reset-tokens": "14s",
    }
    items = [
        chunk({"role": "assistant", "content": "Hello"}),
        chunk({}, finish="stop"),
        chunk(choices=False, usage=usage),
    ]
    return Stream(items, headers=headers)


def test_the_line_tells_what_really_served_the_session(tmp_path: Path) -> None:
    with pooled_proxy(tmp_path, CONFIG, {"moonshot": answer}) as pool:
        client = pool.harness.client()
        with client.messages.stream(
            model="claude-opus-5-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-claude-code-session-id": CAPTURED["session_id"]},
        ) as stream:
            stream.get_final_message()
        shown = statusline(pool.url, CAPTURED)
        other = statusline(pool.url, {**CAPTURED, "session_id": "another-session"})
        metrics = httpx.get(f"{pool.url}/metrics").text
    assert 'kimi_cost_usd_total{model="kimi-k2.6",provider="moonshot"} 0.02915' in metrics
    assert shown.returncode == 0 and shown.stderr == ""
    # Claude Code thinks: Opus 5.5, a 1M window, Anthropic's prices. The proxy knows better:
    # 40,000 new + 1,000 cached input and 2,000 output tokens at Moonshot's $0.60/$0.15/$2.50.
    assert re.fullmatch(
        r"kimi-k2\.6 @ moonshot · ctx 41k/262k · TPM 38% \(resets 1[34]s\) · \$0\.03 today\n",
        shown.stdout,
    ), shown.stdout
    assert other.stdout == "kimi-proxy · Opus 5.5 · no answer yet this session\n"


def test_with_the_proxy_down_a_short_line_and_exit_0() -> None:
    port = free_port()
    shown = statusline(f"http://127.0.0.1:{port}", CAPTURED)
    assert shown.returncode == 0 and shown.stderr == ""
    assert shown.stdout == f"kimi-proxy: not running (127.0.0.1:{port})\n"


def test_odd_input_never_shows_a_traceback() -> None:
    port = free_port()
    for text in ("", "not json", "[1, 2]"):
        shown = subprocess.run(
            [sys.executable, "-m", "kimi_proxy", "statusline", "--url", f"http://127.0.0.1:{port}"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0 and shown.stderr == "" and "not running" in shown.stdout
