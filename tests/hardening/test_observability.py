"""The operator's view: request log lines, request ids, metrics, doctor."""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.proxy import TEST_KEY, proxy_for
from support.sse_client import BASIC, post_stream
from support.upstream import Json, Reply, error, scripted_upstream, text_stream

from kimi_proxy.cli.doctor import run_doctor
from kimi_proxy.config.settings import Settings
from kimi_proxy.server.observability import new_request_id


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "kimi_proxy.access"]


def test_one_structured_line_per_request_and_request_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kimi_proxy.access")

    def script(body: object, n: int) -> Reply:
        return error(429, "slow", headers={"retry-after": "0"}) if n == 0 else text_stream("hi")

    with proxy_for(script) as proxy:
        response, _ = post_stream(proxy.url, {**BASIC, "model": "claude-haiku-5-5"})
        with httpx.Client() as client:
            bad = client.post(f"{proxy.url}/v1/messages", content=b"{")
    lines = access_lines(caplog)
    assert len(lines) == 2
    ok, failed = lines
    assert ok["request_id"] == response.headers["request-id"]
    assert str(ok["request_id"]).startswith("req_")
    assert ok["status"] == 200 and ok["stream"] is True
    assert ok["model_asked"] == "claude-haiku-5-5" and ok["model_used"] == "kimi-small"
    assert ok["retries"] == 1
    assert isinstance(ok["ttft_ms"], float) and ok["ttft_ms"] <= ok["latency_ms"]
    assert ok["input_tokens"] == 10 and ok["output_tokens"] == 1
    assert failed["status"] == 400 and failed["error_type"] == "invalid_request_error"
    assert failed["request_id"] == bad.headers["request-id"]
    assert failed["request_id"] != ok["request_id"]


def test_request_ids_are_unique_and_differ_between_worker_processes() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == len("req_") + 24 for i in ids)
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "from kimi_proxy.server.observability import new_request_id as n; print(n())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() not in ids


def test_metrics_endpoint() -> None:
    with proxy_for(lambda b, n: text_stream("abc")) as proxy, httpx.Client() as client:
        post_stream(proxy.url, BASIC)
        client.post(f"{proxy.url}/v1/messages", content=b"{")
        text = client.get(f"{proxy.url}/metrics").text
    assert 'kimi_requests_total{path="/v1/messages",status="200"} 1.0' in text
    assert 'kimi_errors_total{type="invalid_request_error"} 1.0' in text
    assert "kimi_active_streams 0.0" in text
    assert "kimi_ttft_seconds_count 1.0" in text
    assert 'kimi_tokens_total{direction="out"}' in text
    assert "kimi_upstream_retries_total" in text
    assert "kimi_request_seconds_bucket" in text


def test_garbage_collector_pauses_are_in_the_metrics_while_the_proxy_runs() -> None:
    """A full collection stops every stream; an operator sees each pause by generation."""
    callbacks = list(gc.callbacks)
    with proxy_for(lambda b, n: text_stream("abc")) as proxy, httpx.Client() as client:
        gc.collect()  # a full collection, in the proxy's own process
        text = client.get(f"{proxy.url}/metrics").text
    counts = {
        sample.labels["generation"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "kimi_gc_pause_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    }
    assert counts["2"] >= 1
    assert set(counts) == {"0", "1", "2"}
    assert gc.callbacks == callbacks  # the proxy's timer left with it


def test_doctor_says_what_is_wrong_per_key_without_a_model_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with scripted_upstream(lambda b, n: text_stream("OK"), models=["kimi-big"]) as upstream:
        good = Settings(
            upstream_url=upstream.base_url,
            api_key=TEST_KEY,
            model="kimi-big",
            small_model="kimi-big",
        )
        assert run_doctor(good) == 0
        out = capsys.readouterr().out
        assert "reachable, key valid; serves kimi-big" in out and "key …7890" in out
        assert "Web search is off: set BRAVE_API_KEY" in out
        assert upstream.requests == []  # no model call
        upstream.models_reply = error(401, "Invalid API Key")
        assert run_doctor(good) == 1
        out = capsys.readouterr().out
        assert "rejected the key" in out and "GROQ_API_KEY" in out and TEST_KEY not in out
        upstream.models_reply = None
        upstream.models = ["kimi-k2.6", "other"]
        assert run_doctor(good) == 1
        assert "does not serve kimi-big (it serves kimi-k2.6, other)" in capsys.readouterr().out
    assert run_doctor(Settings(api_key=None)) == 2  # the launcher's own refusal
    assert "no provider to run Claude Code on" in capsys.readouterr().out


@pytest.mark.parametrize(("limit", "verdict"), [("10000", 1), ("20000", 0), ("250000", 0)])
def test_doctor_checks_the_keys_tokens_a_minute_against_claude_code(
    capsys: pytest.CaptureFixture[str], limit: str, verdict: int
) -> None:
    """Groq's free plan allows fewer tokens a minute than one Claude Code request counts:
    doctor says so before the first session fails (from the headers of its model list)."""
    headers = {"x-ratelimit-limit-tokens": limit, "x-ratelimit-remaining-tokens": limit}
    with scripted_upstream(lambda b, n: text_stream("OK"), models=["kimi-big"]) as up:
        up.models_reply = Json({"data": [{"id": "kimi-big"}]}, headers=headers)
        settings = Settings(
            upstream_url=up.base_url,
            api_key=TEST_KEY,
            model="kimi-big",
            small_model="kimi-big",
            provider="groq",
        )
        assert run_doctor(settings) == verdict
    out = capsys.readouterr().out
    assert f"{int(limit):,} tokens a minute" in out
    if verdict:
        assert "❌ groq key …7890: this key allows 10,000 tokens a minute" in out
        assert "console.groq.com/settings/billing" in out
    # Between one request and one auto mode check: usable, but checked actions get blocked.
    assert ("auto mode's safety check" in out) is (limit == "20000")
