"""Keys that come back: a key the provider refused (401) is asked `GET /models` again every
`key_recheck_s` and serves again, without a restart, once the provider accepts it; meanwhile a
request with no key left gets the immediate 402."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from support.providers import pooled_proxy
from support.upstream import Reply, error, text_stream

from kimi_proxy.cli.doctor import rechecking

ONE_KEY = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-0001"]
[family.kimi]
candidates = ["alpha:kimi-a"]
[route]
default = "kimi"
key_recheck_s = 0.5
"""


def test_a_refused_key_serves_again_once_the_provider_accepts_it(tmp_path: Path) -> None:
    accepted = {"now": False}

    def provider(body: dict[str, Any], call: int) -> Reply:
        return text_stream("back") if accepted["now"] else error(401, "Invalid API key")

    with pooled_proxy(tmp_path, ONE_KEY, {"alpha": provider}) as pool:
        upstream = pool.providers["alpha"]
        upstream.models_reply = error(401, "Invalid API key")
        client = pool.harness.client()

        def ask() -> str:
            message = client.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=20,
                messages=[{"role": "user", "content": "hi"}],
            )
            return message.content[0].text  # type: ignore[union-attr]

        for _ in range(2):
            with pytest.raises(anthropic.APIStatusError) as no_key:
                ask()
            assert no_key.value.status_code == 402  # at once, while the key is out
        assert "checked again" in str(no_key.value)
        [key] = pool.harness.state.pool.all_keys()
        assert key.disabled and key.recheck_at is not None
        said = rechecking(httpx.get(f"{pool.url}/health", timeout=5).json())
        assert (
            said and said[0].startswith("alpha: a key is disabled") and "rechecking in" in said[0]
        )
        refused_at = time.monotonic()  # refused again at its recheck: the wait doubles
        while key.recheck_every != 1.0:
            assert time.monotonic() - refused_at < 5, "the key was never checked again"
            time.sleep(0.02)
        assert key.disabled
        accepted["now"], upstream.models_reply = True, None
        fixed_at = time.monotonic()
        while True:
            try:
                answer = ask()
                came_back = time.monotonic()
                break
            except anthropic.APIStatusError as still:
                assert still.status_code == 402
                assert time.monotonic() - fixed_at < 1.0 + 0.25 + 1.0, "the key never came back"
                time.sleep(0.05)
    assert answer == "back"
    assert came_back - fixed_at < 1.0 + 0.5  # within key_recheck_s (doubled) of the fix
