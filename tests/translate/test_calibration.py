"""Token counts that match the provider's: after one answer reports its prompt count, the
estimate of the next request of the same conversation is within 5%, for English, code,
JSON-heavy and Chinese-heavy conversations; kept across restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.proxy import proxy_for
from support.redis_server import redis_server
from support.sse_client import post_stream
from support.upstream import Reply, text_stream, usage

from bench.token_counts import KINDS, conversation
from bench.tokenizer import count_prompt
from kimi_proxy.translate.calibration import CACHED_FROM, Calibration, Prompt, _classify, measure


def off_by(estimate: int, truth: int) -> float:
    return abs(estimate - truth) / truth


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_after_one_answer_the_next_request_is_within_5_percent(kind: str) -> None:
    calibration = Calibration()
    first = conversation(kind, turns=5)
    calibration.learn(measure(first), count_prompt(first))
    following = conversation(kind, turns=6)  # the same conversation, one exchange on
    assert off_by(calibration.estimate(measure(following)), count_prompt(following)) < 0.05


def test_chinese_text_is_counted_per_character_not_per_byte() -> None:
    """Before any answer: the old estimate (a token per 4 characters) put Chinese-heavy text
    at 60% under the provider; the prior counts its characters, not its bytes."""
    payload = conversation("chinese", turns=6)
    assert off_by(Calibration().estimate(measure(payload)), count_prompt(payload)) < 0.25


@given(
    st.tuples(*(st.integers(200, 50_000) for _ in range(5)), st.integers(1, 200)),
    st.floats(0.5, 2.0),
)
def test_a_prompt_just_reported_is_estimated_as_reported(
    counts: tuple[int, ...], ratio: float
) -> None:
    prompt = Prompt(counts)
    calibration = Calibration()
    reported = max(1, round(calibration.estimate(prompt) * ratio))
    calibration.learn(prompt, reported)
    assert abs(calibration.estimate(prompt) - reported) <= max(3, reported * 0.02)


def test_a_damaged_saved_calibration_is_the_prior() -> None:
    assert Calibration.from_json({"weights": [1, 2]}).weights == Calibration().weights
    assert Calibration.from_json("nonsense").reports == 0


def provider_counting(body: dict[str, Any], call: int) -> Reply:
    """A provider that reports how many prompt tokens its tokenizer counted."""
    reply = text_stream("ok")
    counted = usage(prompt=count_prompt(body))
    reply.items = [{**i, "usage": counted} if i.get("usage") else i for i in reply.items]
    return reply


def anthropic_messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in payload["messages"] if m["role"] != "system"]


@pytest.mark.parametrize("kind", ["english", "chinese"])
def test_count_tokens_and_the_context_meter_match_the_provider_after_one_answer(
    kind: str, tmp_path: Path
) -> None:
    first, following = conversation(kind, turns=5), conversation(kind, turns=6)
    system = first["messages"][0]["content"]
    body = {"model": "claude-sonnet-4-5", "system": system}
    saved = tmp_path / "calibration.json"
    with proxy_for(provider_counting, calibration_file=str(saved)) as proxy:
        client = proxy.client()
        before = client.messages.count_tokens(
            **{**body, "messages": anthropic_messages(following)}
        ).input_tokens
        client.messages.create(**{**body, "max_tokens": 100, "messages": anthropic_messages(first)})
        sent = proxy.upstream.bodies[-1]
        after = client.messages.count_tokens(
            **{**body, "messages": anthropic_messages(following)}
        ).input_tokens
        asked = {**body, "max_tokens": 100, "messages": anthropic_messages(following)}
        _, events = post_stream(proxy.url, asked)
        meter = events[0][1]["message"]["usage"]["input_tokens"]  # before the provider's count
        truth = proxy.upstream.bodies[-1]
        latest = client.messages.count_tokens(
            **{**body, "messages": anthropic_messages(following)}
        ).input_tokens
    assert "tools" not in sent
    assert off_by(after, count_prompt(truth)) < 0.05
    if off_by(before, count_prompt(truth)) > 0.05:  # the prior was off: one answer fixed it
        assert off_by(after, count_prompt(truth)) < off_by(before, count_prompt(truth))
    assert meter == after  # Claude Code's context meter starts from the same estimate
    assert saved.stat().st_mode & 0o777 == 0o600  # kept for the next start
    with proxy_for(provider_counting, calibration_file=str(saved)) as restarted:
        again = (
            restarted.client()
            .messages.count_tokens(**{**body, "messages": anthropic_messages(following)})
            .input_tokens
        )
        health = httpx.get(f"{restarted.url}/health")
    assert again == latest and health.status_code == 200


def test_on_a_gateway_the_calibration_is_kept_in_redis_for_every_instance(
    tmp_path: Path,
) -> None:
    """With Redis, what one instance learned is what the next one (or another) starts from."""
    first, following = conversation("json", turns=5), conversation("json", turns=6)
    body = {"model": "claude-sonnet-4-5", "system": first["messages"][0]["content"]}
    asked = {**body, "messages": anthropic_messages(following)}
    with redis_server(tmp_path / "redis") as redis:
        with proxy_for(provider_counting, redis_url=redis.url) as proxy:
            client = proxy.client()
            client.messages.create(
                **{**body, "max_tokens": 50, "messages": anthropic_messages(first)}
            )
            learned = client.messages.count_tokens(**asked).input_tokens
        with proxy_for(provider_counting, redis_url=redis.url) as other:
            deadline = time.monotonic() + 5
            counter = other.client().messages
            while (again := counter.count_tokens(**asked).input_tokens) != learned:
                assert time.monotonic() < deadline, (again, learned)
                time.sleep(0.05)
        with proxy_for(provider_counting) as alone:  # no Redis, no file: the prior
            prior = alone.client().messages.count_tokens(**asked).input_tokens
    assert prior != learned


@given(
    st.lists(
        st.text(min_size=0, max_size=CACHED_FROM + 40).map(lambda t: t * (1 + len(t) % 3)),
        min_size=1,
        max_size=8,
    )
)
def test_a_prompt_counts_as_the_sum_of_its_texts_short_and_long(texts: list[str]) -> None:
    """Short texts are counted together in one pass, long ones each (and kept): the counts are
    the same as counting every text on its own."""
    payload = {"messages": [{"role": "user", "content": text} for text in texts]}
    expected = [sum(_classify(text)[i] for text in texts) for i in range(5)]
    assert measure(payload).counts == (*expected, len(texts))
