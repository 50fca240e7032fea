"""Provider errors, faults and bad client input: always an Anthropic-shaped error, and the
server keeps serving."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import pytest
from starlette.testclient import TestClient
from support.proxy import TEST_KEY, Harness, proxy_for
from support.sse_client import BASIC, post_stream
from support.upstream import (
    Drop,
    Json,
    Pause,
    Raw,
    Stall,
    Stream,
    chunk,
    error,
    per_minute_token_limit,
    text_stream,
    usage,
)

from kimi_proxy.config.settings import Settings
from kimi_proxy.server.app import create_app
from kimi_proxy.translate.stream import StreamTranslator
from kimi_proxy.upstream.client import MIN_ANSWER_TOKENS

PROVIDER_ERRORS = [
    # provider status, client status, error type, words the message must contain
    (400, 400, "invalid_request_error", "rejected the request"),
    # a rejected key is disabled: with no key left, a 402 that Claude Code shows at once
    (401, 402, "billing_error", "GROQ_API_KEY"),
    (402, 402, "billing_error", "credits and plan"),
    (403, 402, "billing_error", "refused access"),
    (404, 400, "invalid_request_error", "KIMI_UPSTREAM_URL"),
    (413, 413, "request_too_large", "HTTP 413"),
    (422, 400, "invalid_request_error", "rejected the request"),
    (429, 429, "rate_limit_error", "rate-limiting"),
    (500, 500, "api_error", "HTTP 500"),
    (502, 500, "api_error", "HTTP 502"),
    (503, 529, "overloaded_error", "boom"),
    (504, 504, "timeout_error", "boom"),
    (529, 529, "overloaded_error", "boom"),
]


def _shape(body: dict[str, Any], error_type: str) -> str:
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


@pytest.mark.parametrize(("upstream_status", "status", "error_type", "words"), PROVIDER_ERRORS)
@pytest.mark.parametrize("stream", [True, False])
def test_provider_error_maps_to_anthropic_error(
    proxy: Harness, upstream_status: int, status: int, error_type: str, words: str, stream: bool
) -> None:
    proxy.upstream.script = lambda b, n: error(
        upstream_status, "boom", headers={"retry-after": "0"}
    )
    with httpx.Client(timeout=20) as client:
        response = client.post(f"{proxy.url}/v1/messages", json={**BASIC, "stream": stream})
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert words in _shape(response.json(), error_type)
    retried = upstream_status == 429 or upstream_status >= 500
    assert len(proxy.upstream.requests) == (3 if retried else 1)  # max_retries=2 in tests
    if upstream_status == 429:
        assert response.headers["retry-after"] == "0"
    if upstream_status in (401, 403):  # the key is disabled: the next answer says so at once
        proxy.upstream.requests.clear()
        with pytest.raises(anthropic.APIStatusError) as info:
            proxy.client().messages.create(**BASIC)
        assert info.value.status_code == 402 and "…7890" in info.value.message
        assert (
            "No provider key is left" in info.value.message and TEST_KEY not in info.value.message
        )
        assert proxy.upstream.requests == []
        proxy.pool.forget()
    # and the server keeps serving
    proxy.upstream.script = lambda b, n: text_stream("fine")
    assert proxy.client().messages.create(**BASIC).content[0].text == "fine"  # type: ignore[union-attr]


def test_a_model_the_provider_does_not_serve_is_a_400_naming_the_setting(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: error(
        404, "The model `kimi-big` does not exist or you do not have access to it."
    )
    with httpx.Client() as client:
        response = client.post(f"{proxy.url}/v1/messages", json=BASIC)
    assert response.status_code == 400
    message = _shape(response.json(), "invalid_request_error")
    assert "does not know model 'kimi-big'" in message and "KIMI_MODEL" in message


def test_a_rejected_key_reaches_the_sdk_as_a_402_naming_the_setting(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: error(401, "Invalid API Key")
    with pytest.raises(anthropic.APIStatusError) as info:
        proxy.client().messages.create(**BASIC)
    assert info.value.status_code == 402 and "KIMI_API_KEY" in str(info.value)


def test_context_length_error_uses_anthropic_wording(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: error(
        400, "Please reduce the length of the messages or completion. context_length_exceeded"
    )
    with httpx.Client() as client:
        response = client.post(f"{proxy.url}/v1/messages", json=BASIC)
    message = _shape(response.json(), "invalid_request_error")
    assert response.status_code == 400
    assert message.startswith("prompt is too long: ")
    assert "> 262144 maximum" in message or "maximum" in message


def test_429_once_then_success_is_retried(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: (
        error(429, "slow down", headers={"retry-after": "1"})
        if n == 0
        else text_stream("after retry")
    )
    started = time.monotonic()
    _, events = post_stream(proxy.url, BASIC)
    assert time.monotonic() - started >= 0.9  # Retry-After honoured
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text == "after retry"
    assert len(proxy.upstream.requests) == 2


def test_long_retry_after_is_passed_on_not_waited(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: error(429, "later", headers={"retry-after": "120"})
    started = time.monotonic()
    with httpx.Client() as client:
        response = client.post(f"{proxy.url}/v1/messages", json=BASIC)
    assert time.monotonic() - started < 5
    assert response.status_code == 429 and response.headers["retry-after"] == "120"
    assert len(proxy.upstream.requests) == 1


@pytest.mark.parametrize("stream", [True, False])
def test_over_the_tokens_a_minute_limit_the_answer_budget_is_cut_to_fit(
    proxy: Harness, stream: bool
) -> None:
    """Groq counts `max_tokens` in full against the key's per-minute limit before it runs a
    request: one over the limit is sent once more with the answer budget that fits."""
    proxy.upstream.script = per_minute_token_limit(3_000, lambda b, n: text_stream("it fits"))
    request = {**BASIC, "max_tokens": 8_000}
    client = proxy.client()
    if stream:
        with client.messages.stream(**request) as events:  # type: ignore[arg-type]
            text = events.get_final_text()
    else:
        text = client.messages.create(**request).content[0].text  # type: ignore[union-attr, arg-type]
    assert text == "it fits"
    first, second = proxy.upstream.bodies
    assert first["max_tokens"] == 8_000
    assert MIN_ANSWER_TOKENS <= second["max_tokens"] < 3_000
    assert {k: v for k, v in second.items() if k != "max_tokens"} == {
        k: v for k, v in first.items() if k != "max_tokens"
    }


@pytest.mark.parametrize("stream", [True, False])
def test_a_request_the_tokens_a_minute_limit_cannot_hold_is_a_402_saying_so(
    proxy: Harness, stream: bool
) -> None:
    """Not a 429 (waiting cannot help, and clients retry those) and not a 413 (Claude Code
    shows its own advice about images instead of the message)."""
    proxy.upstream.script = per_minute_token_limit(1_000, lambda b, n: text_stream("never"))
    with httpx.Client() as client:
        response = client.post(
            f"{proxy.url}/v1/messages", json={**BASIC, "max_tokens": 8_000, "stream": stream}
        )
    assert response.status_code == 402
    message = _shape(response.json(), "billing_error")
    assert "allows this key 1,000 tokens a minute for kimi-big" in message
    assert "tokens-per-minute limit" in message and "Provider said: Request too large" in message
    assert len(proxy.upstream.requests) == 1
    with pytest.raises(anthropic.PaymentRequiredError):
        proxy.client().messages.create(**BASIC)


@pytest.mark.parametrize(
    ("status", "message", "too_big"),
    [
        (413, "on tokens per minute (TPM): Limit 10000, Requested 28287, please reduce", True),
        (
            429,
            "Request too large for gpt-4o on tokens per min (TPM): Limit 30000, "
            "Requested 342389. The input or output tokens must be reduced",
            True,
        ),
        (
            429,
            "on tokens per minute (TPM): Limit 6000, Used 5034, Requested 1443. Please try "
            "again in 4.77s",
            False,
        ),
        (413, "Payload Too Large", False),
        (429, "on requests per day (RPD): Limit 1000, Requested 1001", False),
    ],
    ids=["groq-413", "openai-429", "groq-rate-limit", "plain-413", "requests-a-day"],
)
def test_only_a_request_over_the_tokens_a_minute_limit_is_a_402(
    proxy: Harness, status: int, message: str, too_big: bool
) -> None:
    proxy.upstream.script = lambda b, n: error(status, message, headers={"retry-after": "0"})
    with httpx.Client() as client:
        response = client.post(f"{proxy.url}/v1/messages", json=BASIC)
    assert (response.status_code == 402) is too_big
    retried = status == 429 and not too_big
    assert len(proxy.upstream.requests) == (3 if retried else 1)


def test_html_error_page(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: Raw(
        b"<html><body><h1>502 Bad Gateway</h1></body></html>", status=502
    )
    with httpx.Client() as client:
        response = client.post(f"{proxy.url}/v1/messages", json=BASIC)
    assert response.status_code == 500
    assert "502 Bad Gateway" in _shape(response.json(), "api_error")
    assert "<html>" not in response.text


def _stream_error(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    names = [n for n, _ in events]
    assert names[0] == "message_start"
    assert names[-1] == "error", names
    assert "message_stop" not in names
    return events[-1][1]


def test_error_object_inside_stream(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: Stream(
        [
            chunk({"content": "partial"}),
            {"error": {"message": "tool call validation failed", "code": "tool_use_failed"}},
        ]
    )
    _, events = post_stream(proxy.url, BASIC)
    assert "tool call validation failed" in _shape(_stream_error(events), "api_error")


def test_mid_stream_drop_becomes_error_event(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: Stream([chunk({"content": "half"}), Drop()], done=False)
    response, events = post_stream(proxy.url, BASIC)
    assert response.status_code == 200
    _shape(_stream_error(events), "api_error")


def test_stream_ending_without_finish_is_an_error(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: Stream([chunk({"content": "half"})], done=False)
    _, events = post_stream(proxy.url, BASIC)
    assert "closed the stream" in _shape(_stream_error(events), "api_error")


def test_malformed_stream_line(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: Stream([chunk({"content": "a"}), b"data: {not json\n\n"])
    _, events = post_stream(proxy.url, BASIC)
    assert "malformed" in _shape(_stream_error(events), "api_error")


def test_stalls_end_within_the_read_timeout() -> None:
    def script(body: Any, n: int) -> Any:
        if n == 0:
            return Stall()
        return Stream([chunk({"content": "start"}), Pause(30), chunk({}, finish="stop")])

    with proxy_for(script, read_timeout=1.0, ping_interval=0.4) as proxy:
        started = time.monotonic()
        with httpx.Client(timeout=20) as client:
            before = client.post(f"{proxy.url}/v1/messages", json={**BASIC, "stream": True})
        assert before.status_code == 504
        _shape(before.json(), "timeout_error")
        assert len(proxy.upstream.requests) == 1  # a stall is not retried
        _, events = post_stream(proxy.url, BASIC)
        assert "Timed out" in _shape(_stream_error(events), "timeout_error")
        assert time.monotonic() - started < 8
        stalled = proxy.upstream.requests[1]
        assert stalled.wait_cancelled(), "the stalled provider stream was left open"


def test_connection_refused(proxy: Harness) -> None:
    from support.proxy import proxy_settings, serve_proxy
    from support.upstream import free_port

    settings = proxy_settings(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    with serve_proxy(settings) as url, httpx.Client() as client:
        response = client.post(f"{url}/v1/messages", json=BASIC)
    assert response.status_code == 502
    assert "Cannot connect" in _shape(response.json(), "api_error")


def test_no_key_configured() -> None:
    with proxy_for(lambda b, n: text_stream("x"), api_key=None) as proxy, httpx.Client() as client:
        health = client.get(f"{proxy.url}/health").json()
        response = client.post(f"{proxy.url}/v1/messages", json=BASIC)
    assert health["api_key_configured"] is False
    assert response.status_code == 401
    assert "GROQ_API_KEY" in _shape(response.json(), "authentication_error")
    assert proxy.upstream.requests == []


def test_client_disconnect_cancels_upstream(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: Stream(
        [chunk({"content": "tick "})] + [Pause(0.05), chunk({"content": "tick "})] * 400
    )
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", f"{proxy.url}/v1/messages", json={**BASIC, "stream": True}
        ) as response,
    ):
        for line in response.iter_lines():
            if "text_delta" in line:
                break
    record = proxy.upstream.requests[-1]
    assert record.wait_cancelled(), "the upstream stream kept going after the client left"
    assert not record.finished


BAD_INPUT = [
    # body, status, words in the message
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model: Field required"),
    (b'{"model": "m", "messages": "hi"}', 400, "messages"),
    (b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', 400, "role"),
    (b'{"model": "m", "max_tokens": "lots", "messages": []}', 400, "max_tokens"),
    # as Anthropic's API: a conversation needs a message (it was a 200 with an empty answer)
    (b'{"model": "m", "max_tokens": 10, "messages": []}', 400, "messages: List should have"),
    (b'{"model": "m", "stream": true, "messages": []}', 400, "at least 1 item"),
    (
        b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}',
        400,
        "'hologram'",
    ),
    (
        b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "document", '
        b'"source": {"type": "base64", "media_type": "application/pdf", "data": "AA=="}}]}]}',
        400,
        "application/pdf",
    ),
    # found by the fuzz test: a block type that is not a string crashed the union tagger
    (b'{"model": "m", "messages": [{"role": "user", "content": [{"type": []}]}]}', 400, "type"),
    (
        b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}',
        400,
        "text: Field required",
    ),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_INPUT)
def test_bad_input(proxy: Harness, body: bytes, status: int, words: str) -> None:
    with httpx.Client() as client:
        response = client.post(
            f"{proxy.url}/v1/messages", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status
    assert words in _shape(response.json(), "invalid_request_error")
    assert proxy.upstream.requests == []


def test_body_over_the_limit() -> None:
    with (
        proxy_for(lambda b, n: text_stream("x"), max_body_bytes=4096) as proxy,
        httpx.Client() as client,
    ):
        big = {**BASIC, "messages": [{"role": "user", "content": "x" * 10000}]}
        response = client.post(f"{proxy.url}/v1/messages", json=big)
        assert response.status_code == 413
        _shape(response.json(), "request_too_large")
        assert client.post(f"{proxy.url}/v1/messages", json=BASIC).status_code == 200


def test_unknown_route_and_method(proxy: Harness) -> None:
    with httpx.Client() as client:
        missing = client.get(f"{proxy.url}/v2/nothing")
        wrong = client.get(f"{proxy.url}/v1/messages")
    assert missing.status_code == 404
    _shape(missing.json(), "not_found_error")
    assert wrong.status_code == 405
    _shape(wrong.json(), "invalid_request_error")


def test_stream_limit_answers_overloaded() -> None:
    slow = Stream([chunk({"content": "a"}), Pause(2), chunk({}, finish="stop", usage=usage())])
    with proxy_for(lambda b, n: slow, max_streams=1) as proxy, httpx.Client(timeout=10) as client:
        with client.stream(
            "POST", f"{proxy.url}/v1/messages", json={**BASIC, "stream": True}
        ) as first:
            lines = first.iter_lines()  # keep a reference: dropping it closes the connection
            next(lines)
            second = client.post(f"{proxy.url}/v1/messages", json={**BASIC, "stream": True})
            assert second.status_code == 529
            _shape(second.json(), "overloaded_error")
            assert "message_stop" in "".join(lines)
        deadline = time.monotonic() + 2
        while client.get(f"{proxy.url}/health").json()["active_streams"] and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)
        assert client.post(f"{proxy.url}/v1/messages", json={**BASIC, "stream": True}).is_success


def test_json_error_body_for_unexpected_failures(proxy: Harness) -> None:
    proxy.upstream.script = lambda b, n: Json({"choices": []})
    with httpx.Client() as client:
        response = client.post(f"{proxy.url}/v1/messages", json=BASIC)
    assert response.status_code == 500
    assert "no choices" in _shape(response.json(), "api_error")


GROQ_TOOL_USE_FAILED = {
    "error": {
        "message": "Failed to call a function. Please adjust your prompt.",
        "type": "invalid_request_error",
        "code": "tool_use_failed",
        "failed_generation": "<|tool_call|>...",
    }
}


def test_invalid_model_tool_call_is_retried_then_not_a_400(proxy: Harness) -> None:
    """Groq rejects Kimi's own malformed tool calls with a 400; that is not the client's
    fault (Claude Code drops features after 400s), and another attempt usually works."""
    proxy.upstream.script = lambda b, n: (
        Json(GROQ_TOOL_USE_FAILED, 400) if n == 0 else text_stream("second try")
    )
    _, events = post_stream(proxy.url, BASIC)
    assert events[-1][0] == "message_stop" and len(proxy.upstream.requests) == 2
    proxy.upstream.requests.clear()
    proxy.upstream.script = lambda b, n: Json(GROQ_TOOL_USE_FAILED, 400)
    with httpx.Client() as client:
        response = client.post(f"{proxy.url}/v1/messages", json=BASIC)
    assert response.status_code == 500
    assert "invalid tool call" in _shape(response.json(), "api_error")
    assert len(proxy.upstream.requests) == 3
    proxy.upstream.script = lambda b, n: Stream([chunk({"content": "a"}), GROQ_TOOL_USE_FAILED])
    _, events = post_stream(proxy.url, BASIC)
    assert "invalid tool call mid-stream" in _shape(_stream_error(events), "api_error")


@pytest.mark.parametrize("cors", ["", "https://app.example"], ids=["fast-path", "starlette"])
def test_a_bug_below_the_route_is_a_500_in_anthropic_shape_logged_once(
    cors: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`POST /v1/messages` skips Starlette's layers unless CORS is on: both ways a failure
    nobody foresaw is the same Anthropic-shaped 500, with a request id, and serving goes on.
    Its traceback is logged once: the error never reaches the server, which would log it again
    (the test client raises what reaches it)."""

    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in a transport")

    settings = Settings(api_key="k", upstream_url="http://upstream.test/v1", cors_origins=cors)
    app = create_app(settings, transport=httpx.MockTransport(broken))
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=True) as client:
        for _ in range(2):
            response = client.post("/v1/messages", json=BASIC)
            assert response.status_code == 500
            assert "Internal proxy error (RuntimeError)" in _shape(response.json(), "api_error")
            assert response.headers["request-id"].startswith("req_")
        assert client.get("/health").status_code == 200
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 2, [r.getMessage() for r in tracebacks]


def test_a_bug_mid_stream_ends_the_stream_with_an_error_event_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream that has started cannot become a 500: a failure nobody foresaw ends it with an
    `error` event, like a provider's failure, and its traceback is logged once."""
    translator_feed = StreamTranslator.feed
    fed: list[int] = []

    def feed_then_fail(self: StreamTranslator, chunk: dict[str, Any]) -> list[Any]:
        fed.append(1)
        if len(fed) > 2:
            raise RuntimeError("a bug in the translator")
        return translator_feed(self, chunk)

    monkeypatch.setattr(StreamTranslator, "feed", feed_then_fail)
    with proxy_for(lambda b, n: text_stream("one two three four", pieces=4)) as proxy:
        _, events = post_stream(proxy.url, BASIC)
        error = _stream_error(events)
        assert "Internal proxy error (RuntimeError)" in _shape(error, "api_error")
        assert any(name == "content_block_delta" for name, _ in events), "it had started"
        monkeypatch.setattr(StreamTranslator, "feed", translator_feed)
        _, events = post_stream(proxy.url, BASIC)
        assert events[-1][0] == "message_stop"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]
