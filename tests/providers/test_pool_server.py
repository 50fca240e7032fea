"""The provider pool in the real server: several scripted providers, each speaking its
dialect's headers, driven by the official SDK and checked against the stream grammar."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from support.providers import RateLimited, groq_headers, pooled_proxy
from support.sse_client import BASIC, post_stream
from support.streams import check_grammar
from support.upstream import Drop, Json, Pause, Stream, chunk, error, text_stream

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
[route]
default = "kimi"
max_wait_s = 3
"""


def _text(events: list[tuple[str, Any]]) -> str:
    return "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")


def _reply(client: anthropic.Anthropic, stream: bool, **extra: Any) -> str:
    kwargs: dict[str, Any] = {**BASIC, **extra}
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    return "".join(b.text for b in message.content if b.type == "text")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("status", [429, 413, 503, 500])
def test_a_failing_first_provider_fails_over_before_the_first_token(
    tmp_path: Path, stream: bool, status: int
) -> None:
    headers = {"retry-after": "30"} if status == 429 else {}
    with pooled_proxy(
        tmp_path,
        TWO,
        {
            "alpha": lambda b, n: error(status, "no", headers=headers),
            "beta": lambda b, n: text_stream("from beta"),
        },
    ) as pool:
        started = time.monotonic()
        assert _reply(pool.harness.client(), stream) == "from beta"
        assert time.monotonic() - started < 3
        assert pool.providers["beta"].bodies[0]["model"] == "kimi-b"


def test_the_stream_is_one_well_formed_message_across_a_failover(tmp_path: Path) -> None:
    """Alpha's stream breaks before its first delta: beta answers under the same
    message_start, with nothing duplicated or lost, tool calls intact."""
    broken = Stream([chunk({"role": "assistant", "content": ""}), Drop()], done=False)
    with pooled_proxy(
        tmp_path, TWO, {"alpha": lambda b, n: broken, "beta": lambda b, n: text_stream("whole")}
    ) as pool:
        _, events = post_stream(pool.url, BASIC)
    check_grammar([d for _, d in events])
    assert [n for n, _ in events].count("message_start") == 1
    assert _text(events) == "whole"
    assert len(pool.providers["alpha"].requests) == 1


def test_after_the_first_token_a_broken_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    broken = Stream([chunk({"role": "assistant", "content": "Hel"}), Drop()], done=False)
    with pooled_proxy(
        tmp_path, TWO, {"alpha": lambda b, n: broken, "beta": lambda b, n: text_stream("no")}
    ) as pool:
        _, events = post_stream(pool.url, BASIC)
    assert events[-1][0] == "error"
    assert _text(events) == "Hel"
    assert pool.providers["beta"].requests == []


@pytest.mark.parametrize("stream", [True, False])
def test_both_candidates_failing_is_one_clean_error_within_max_wait(
    tmp_path: Path, stream: bool
) -> None:
    with pooled_proxy(
        tmp_path,
        TWO,
        {
            "alpha": lambda b, n: error(503, "overloaded"),
            "beta": lambda b, n: error(429, "slow down", headers={"retry-after": "100"}),
        },
    ) as pool:
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            response = client.post(f"{pool.url}/v1/messages", json={**BASIC, "stream": stream})
        assert time.monotonic() - started < 3 + 2
    assert response.status_code in (429, 529)
    body = response.json()
    assert body["type"] == "error" and body["error"]["message"]


def test_a_rate_limited_key_is_skipped_not_retried_until_its_reset(tmp_path: Path) -> None:
    """Switch: alpha reports its tokens used up for 30 s (over max_wait): the next request goes
    to beta at once, without another try at alpha."""
    spent = Stream(text_stream("alpha").items, headers=groq_headers(10_000, 0, 30.0))
    config = TWO.replace('keys = ["alpha-key-1"]', 'keys = ["alpha-key-1"]\ndialect = "groq"')
    with pooled_proxy(
        tmp_path, config, {"alpha": lambda b, n: spent, "beta": lambda b, n: text_stream("beta")}
    ) as pool:
        client = pool.harness.client()
        assert _reply(client, True) == "alpha"
        assert _reply(client, True) == "beta"
        assert _reply(client, False) == "beta"
        assert len(pool.providers["alpha"].requests) == 1


def test_a_reset_within_max_wait_is_waited_for_with_pings(tmp_path: Path) -> None:
    """Wait: the only key reports its budget used up for 1.5 s (within max_wait): the request
    waits for the reset on the same key, and the client sees pings meanwhile, not silence."""
    one = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-1"]
dialect = "groq"
[family.kimi]
candidates = ["alpha:kimi-a"]
[route]
max_wait_s = 5
"""
    spent = Stream(text_stream("first").items, headers=groq_headers(10_000, 0, 1.5))
    with pooled_proxy(
        tmp_path,
        one,
        {"alpha": lambda b, n: spent if n == 0 else text_stream("after the reset")},
        ping_interval=0.3,
    ) as pool:
        assert _reply(pool.harness.client(), True) == "first"
        started = time.monotonic()
        _, events = post_stream(pool.url, BASIC)
        waited = time.monotonic() - started
    check_grammar([d for _, d in events])
    names = [n for n, _ in events]
    assert _text(events) == "after the reset"
    assert 1.0 < waited < 4
    assert "ping" in names[: names.index("content_block_start")]


def test_no_request_reaches_a_key_whose_budget_cannot_hold_it(tmp_path: Path) -> None:
    """Three keys of 10,000 tokens a minute (a 2 s minute here), requests of ~6,000: the
    provider counts every request per key and records any over its limit."""
    config = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-1", "alpha-key-2", "alpha-key-3"]
dialect = "groq"
[family.kimi]
candidates = ["alpha:kimi-a"]
[route]
max_wait_s = 10
"""
    limited = RateLimited(tpm=10_000, window=2.0)
    with pooled_proxy(tmp_path, config, {"alpha": limited}) as pool:
        client = pool.harness.client()

        def one(i: int) -> str:
            return _reply(client, i % 2 == 0, max_tokens=5_500)

        with ThreadPoolExecutor(4) as workers:
            answers = list(workers.map(one, range(12)))
    assert answers == ["ok"] * 12
    assert limited.violations == []
    assert len(limited.served) == 3  # the load was spread over the keys


def test_a_session_stays_on_its_key_while_it_has_budget(tmp_path: Path) -> None:
    config = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-1", "alpha-key-2"]
dialect = "groq"
[family.kimi]
candidates = ["alpha:kimi-a"]
"""

    def reply(body: dict[str, Any], n: int) -> Stream:
        return Stream(text_stream("ok").items, headers=groq_headers(100_000, 90_000 - n, 30.0))

    with pooled_proxy(tmp_path, config, {"alpha": reply}) as pool:
        client = pool.harness.client()
        for session in ("s1", "s2", "s1", "s2", "s1"):
            _reply(client, True, extra_headers={"x-claude-code-session-id": session})
        keys = [r.headers["authorization"][-1] for r in pool.providers["alpha"].requests]
    assert keys[0] != keys[1]  # the second session got the key with more left
    assert keys[2] == keys[4] == keys[0] and keys[3] == keys[1]


def test_a_retired_model_is_skipped_with_what_is_served_instead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Alpha's live model list lacks kimi-a: it is retired at start-up, once, naming what
    alpha serves; and a 400 model_decommissioned retires a model mid-run and fails over."""
    with pooled_proxy(
        tmp_path,
        TWO,
        {"alpha": lambda b, n: text_stream("alpha"), "beta": lambda b, n: text_stream("beta")},
        models={"alpha": ["kimi-k9"], "beta": ["kimi-b"]},
    ) as pool:
        deadline = time.monotonic() + 5
        while "alpha:kimi-a" not in pool.harness.pool.retired:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        client = pool.harness.client()
        assert _reply(client, True) == "beta"
        assert pool.providers["alpha"].requests == []
    retired = [r.message for r in caplog.records if "retired" in r.message]
    assert len(retired) == 1 and "alpha does not serve kimi-a (it serves kimi-k9)" in retired[0]


def test_a_decommissioned_model_fails_over_and_stays_retired(tmp_path: Path) -> None:
    gone = Json(
        {
            "error": {
                "message": "The model `kimi-a` has been decommissioned and is no longer supported",
                "type": "invalid_request_error",
                "code": "model_decommissioned",
            }
        },
        400,
    )
    with pooled_proxy(
        tmp_path, TWO, {"alpha": lambda b, n: gone, "beta": lambda b, n: text_stream("beta")}
    ) as pool:
        client = pool.harness.client()
        assert _reply(client, True) == "beta"
        assert _reply(client, False) == "beta"
        assert len(pool.providers["alpha"].requests) == 1


def test_a_rejected_key_is_disabled_and_the_other_key_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = TWO.replace('["alpha-key-1"]', '["alpha-key-1", "alpha-key-2"]')

    def alpha(body: dict[str, Any], n: int) -> Any:
        return text_stream("alpha")

    with pooled_proxy(tmp_path, config, {"alpha": alpha, "beta": alpha}) as pool:
        upstream = pool.providers["alpha"]
        upstream.script = lambda b, n: (
            error(401, "Invalid API Key")
            if upstream.requests[n].headers["authorization"].endswith("key-1")
            else text_stream("second key")
        )
        client = pool.harness.client()
        assert _reply(client, True) == "second key"
        assert _reply(client, True) == "second key"
        assert len(upstream.requests) == 3
    disabled = [r.message for r in caplog.records if "disabled" in r.message]
    assert len(disabled) == 1 and "alpha key …ey-1 disabled" in disabled[0]
    assert "alpha-key-1" not in caplog.text


def test_no_key_left_is_a_402_that_says_what_to_fix(tmp_path: Path) -> None:
    with (
        pooled_proxy(
            tmp_path,
            TWO,
            {
                "alpha": lambda b, n: error(401, "bad key"),
                "beta": lambda b, n: error(403, "denied"),
            },
        ) as pool,
        httpx.Client() as client,
    ):
        client.post(f"{pool.url}/v1/messages", json=BASIC)
        response = client.post(f"{pool.url}/v1/messages", json=BASIC)
    assert response.status_code == 402
    message = response.json()["error"]["message"]
    assert "No provider key is left" in message and "alpha key" in message and "beta key" in message


ROUTES = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-1"]
[family.main]
candidates = ["alpha:main-model"]
[family.small]
candidates = ["alpha:small-model"]
[family.agents]
candidates = ["alpha:agent-model"]
[family.thinker]
candidates = ["alpha:thinking-model"]
[family.long]
candidates = ["alpha:long-model"]
[route]
default = "main"
background = "small"
subagent = "agents"
thinking = "thinker"
long_context = "long"
long_context_tokens = 2000
"""


def test_routes_send_each_kind_of_request_to_its_family(tmp_path: Path) -> None:
    with pooled_proxy(tmp_path, ROUTES, {"alpha": lambda b, n: text_stream("ok")}) as pool:
        client = pool.harness.client()
        _reply(client, True)
        _reply(client, True, model="claude-haiku-5-5")
        _reply(client, True, extra_headers={"x-claude-code-agent-id": "agent-1"})
        _reply(client, True, extra_body={"thinking": {"type": "enabled", "budget_tokens": 2000}})
        _reply(client, True, messages=[{"role": "user", "content": "word " * 3000}])
        models = [b["model"] for b in pool.providers["alpha"].bodies]
    assert models == ["main-model", "small-model", "agent-model", "thinking-model", "long-model"]


def test_the_model_is_told_who_it_really_is(tmp_path: Path) -> None:
    with pooled_proxy(tmp_path, TWO, {"alpha": lambda b, n: text_stream("ok")}) as pool:
        client = pool.harness.client()
        claim = "You are Claude Code, Anthropic's official CLI for Claude."
        _reply(client, True, system=f"{claim}\nBe brief.")
        _reply(client, True, system="Be brief.")
        first, second = (b["messages"][0]["content"] for b in pool.providers["alpha"].bodies)
    assert first.startswith("You are kimi-a, served by alpha through kimi-proxy")
    assert "not a Claude model" in first and first.endswith("\nBe brief.")
    assert second == "Be brief."


def test_metrics_models_and_the_access_log_show_the_pool(tmp_path: Path) -> None:
    with pooled_proxy(
        tmp_path,
        TWO,
        {
            "alpha": lambda b, n: error(429, "slow", headers={"retry-after": "30"}),
            "beta": lambda b, n: Stream(
                text_stream("ok").items, headers=groq_headers(10_000, 8_000, 20)
            ),
        },
    ) as pool:
        client = pool.harness.client()
        _reply(client, True)
        with httpx.Client() as http:
            metrics = http.get(f"{pool.url}/metrics").text
            models = http.get(f"{pool.url}/v1/models").json()
    assert (
        'kimi_provider_requests_total{key="…ey-1",model="kimi-a",provider="alpha"} 1.0' in metrics
    )
    assert (
        'kimi_provider_failovers_total{key="…ey-1",model="kimi-a",provider="alpha"} 1.0' in metrics
    )
    assert (
        'kimi_provider_rate_limited_total{key="…ey-1",model="kimi-a",provider="alpha"}' in metrics
    )
    assert "kimi_provider_remaining" in metrics
    ids = [m["id"] for m in models["data"]]
    assert "kimi" in ids and "claude-kimi" in ids and "claude-sonnet-5-5" in ids
    family = next(m for m in models["data"] if m["id"] == "claude-kimi")
    assert family["display_name"] == "Kimi A via alpha"  # what serves it first
    sonnet = next(m for m in models["data"] if m["id"] == "claude-sonnet-5-5")
    assert "alpha:kimi-a, beta:kimi-b" in sonnet["display_name"]


def test_an_image_goes_to_a_model_that_sees_images(tmp_path: Path) -> None:
    """Alpha's model reads text only (catalog: Groq's gpt-oss), beta's sees images (Moonshot's
    Kimi K2.6): a request with an image goes to beta, a text request stays with alpha."""
    config = """
[[provider]]
name = "groq"
base_url = "{GROQ_URL}"
keys = ["alpha-key-1"]
[[provider]]
name = "moonshot"
base_url = "{MOONSHOT_URL}"
keys = ["beta-key-1"]
[family.kimi]
candidates = ["groq:openai/gpt-oss-120b", "moonshot:kimi-k2.6"]
"""
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
        "AAAABJRU5ErkJggg=="
    )
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    with pooled_proxy(
        tmp_path,
        config,
        {"groq": lambda b, n: text_stream("text"), "moonshot": lambda b, n: text_stream("seen")},
    ) as pool:
        client = pool.harness.client()
        assert _reply(client, True) == "text"
        content = [{"type": "text", "text": "what is it?"}, image]
        assert _reply(client, True, messages=[{"role": "user", "content": content}]) == "seen"
        sent = pool.providers["moonshot"].bodies[0]["messages"][-1]["content"]
    assert any(part.get("type") == "image_url" for part in sent)


def test_a_client_that_leaves_mid_stream_settles_its_reservation(tmp_path: Path) -> None:
    """Counted limits (the provider sends no headers): the reservation of a stream the
    client abandons is settled, so nothing stays held."""
    config = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-1"]
limits = { tpm = 100000, rpm = 50 }
[family.kimi]
candidates = ["alpha:kimi-a"]
"""
    slow = Stream([chunk({"role": "assistant", "content": "x"}), Pause(5), *text_stream("y").items])
    with pooled_proxy(tmp_path, config, {"alpha": lambda b, n: slow}) as pool:
        with (
            httpx.Client(timeout=10) as client,
            client.stream(
                "POST", f"{pool.url}/v1/messages", json={**BASIC, "stream": True}
            ) as response,
        ):
            for line in response.iter_lines():
                if "content_block_delta" in line:
                    break
        assert pool.providers["alpha"].requests[0].wait_cancelled()
        [key] = pool.harness.pool.keys["alpha"]
        deadline = time.monotonic() + 3
        while any(b.reserved for b in key.ledger.windows.values()):
            assert time.monotonic() < deadline, key.ledger
            time.sleep(0.02)
        tokens = key.ledger.windows[("tokens", "minute")]
        assert tokens.remaining is not None and tokens.remaining < 100_000
        assert key.ledger.windows[("requests", "minute")].remaining == 49


def test_the_answer_budget_setting_bounds_what_a_request_reserves(tmp_path: Path) -> None:
    """Claude Code asks 32,000 tokens of answer; with KIMI_MAX_OUTPUT_TOKENS=2048 a request
    reserves its prompt and 2,048, so two fit one 10,000-token key back to back."""
    config = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-1"]
dialect = "groq"
[family.kimi]
candidates = ["alpha:kimi-a"]
[route]
max_wait_s = 0
"""
    limited = RateLimited(tpm=10_000, window=30.0)
    with pooled_proxy(tmp_path, config, {"alpha": limited}, max_output_tokens=2048) as pool:
        client = pool.harness.client()
        assert _reply(client, True, max_tokens=32_000) == "ok"
        assert _reply(client, True, max_tokens=32_000) == "ok"
    assert limited.violations == [] and limited.served == {"-key-1": 2}


def test_a_request_larger_than_every_keys_limit_never_goes(tmp_path: Path) -> None:
    """Once the key's tokens a minute are known, a request whose prompt alone exceeds them is
    refused by the proxy (402 naming the limit), not sent for the provider's 413."""
    config = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-1"]
dialect = "groq"
[family.kimi]
candidates = ["alpha:kimi-a"]
"""
    limited = RateLimited(tpm=10_000, window=30.0)
    with pooled_proxy(tmp_path, config, {"alpha": limited}) as pool:
        client = pool.harness.client()
        assert _reply(client, True, max_tokens=1000) == "ok"
        with httpx.Client(timeout=10) as http:
            big = {**BASIC, "messages": [{"role": "user", "content": "word " * 12_000}]}
            response = http.post(f"{pool.url}/v1/messages", json=big)
        assert len(pool.providers["alpha"].requests) == 1
    assert response.status_code == 402
    message = response.json()["error"]["message"]
    assert "larger than any provider key allows" in message and "limit 10,000" in message
