"""Security defaults: loopback bind, proxy token, Host and Origin checks, CORS, no secrets out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.proxy import TEST_KEY, proxy_for
from support.sse_client import BASIC
from support.upstream import Json, error, text_stream

from kimi_proxy.cli import main

TOKEN = "proxy-token-0123456789abcdef"


def test_binding_beyond_loopback_needs_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KIMI_PROXY_AUTH_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "KIMI_PROXY_AUTH_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "token", "why"),
    [
        ("0.0.0.0", "change-me", "placeholder"),
        ("127.0.0.1", "change-me", "placeholder"),
        ("0.0.0.0", "short-token-1234", "at least 32"),
    ],
)
def test_a_placeholder_or_short_token_is_refused_before_serving(
    host: str, token: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example files' token, or a guessable one on the network, never guards a proxy."""
    assert main(["serve", "--host", host, "--port", "1", "--auth-token", token]) == 2
    err = capsys.readouterr().err
    assert why in err and "openssl rand -hex 32" in err


def test_metrics_take_the_token_unless_made_public() -> None:
    for public, expected in ((False, 401), (True, 200)):
        with proxy_for(
            lambda b, n: text_stream("ok"), auth_token=TOKEN, metrics_public=public
        ) as proxy:
            assert httpx.get(f"{proxy.url}/metrics").status_code == expected
            assert httpx.get(f"{proxy.url}/v1/models").status_code == 401


def test_token_is_required_on_every_request_but_health() -> None:
    with (
        proxy_for(lambda b, n: text_stream("ok"), auth_token=TOKEN) as proxy,
        httpx.Client() as client,
    ):
        url = f"{proxy.url}/v1/messages"
        missing = client.post(url, json=BASIC)
        wrong = client.post(url, json=BASIC, headers={"x-api-key": TOKEN[:-1] + "x"})
        by_key = client.post(url, json=BASIC, headers={"x-api-key": TOKEN})
        by_bearer = client.post(url, json=BASIC, headers={"authorization": f"Bearer {TOKEN}"})
        models = client.get(f"{proxy.url}/v1/models")
        health = client.get(f"{proxy.url}/health")
    for refused in (missing, wrong, models):
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        message = refused.json()["error"]["message"]
        assert "KIMI_PROXY_AUTH_TOKEN" in message and "ANTHROPIC_AUTH_TOKEN" in message
        # Claude Code's terminal UI hides a 401 that says "x-api-key" behind its own "Invalid
        # API key · Fix external API key" (measured with 2.1.332): our sentence must not.
        assert "x-api-key" not in message
    assert by_key.status_code == by_bearer.status_code == health.status_code == 200
    assert len(proxy.upstream.requests) == 2


def test_foreign_host_header_is_refused() -> None:
    with proxy_for(lambda b, n: text_stream("ok")) as proxy, httpx.Client() as client:
        port = proxy.url.rsplit(":", 1)[1]
        rebound = client.post(
            f"{proxy.url}/v1/messages", json=BASIC, headers={"host": f"attacker.example:{port}"}
        )
        local = client.post(
            f"{proxy.url}/v1/messages", json=BASIC, headers={"host": f"localhost:{port}"}
        )
    assert rebound.status_code == 403
    assert rebound.json()["error"]["type"] == "permission_error"
    assert local.status_code == 200
    assert len(proxy.upstream.requests) == 1


def test_web_pages_are_refused_unless_listed() -> None:
    page = "https://app.example"
    with proxy_for(lambda b, n: text_stream("ok")) as proxy, httpx.Client() as client:
        drive_by = client.post(
            f"{proxy.url}/v1/messages",
            content=b'{"model":"x"}',
            headers={"origin": "https://evil.example", "content-type": "text/plain"},
        )
    assert drive_by.status_code == 403
    assert proxy.upstream.requests == []
    with (
        proxy_for(lambda b, n: text_stream("ok"), cors_origins=page) as proxy,
        httpx.Client() as client,
    ):
        preflight = client.options(
            f"{proxy.url}/v1/messages",
            headers={
                "origin": page,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,x-api-key",
            },
        )
        allowed = client.post(f"{proxy.url}/v1/messages", json=BASIC, headers={"origin": page})
        other = client.post(
            f"{proxy.url}/v1/messages", json=BASIC, headers={"origin": "https://evil.example"}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == page
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == page
    assert other.status_code == 403


def test_secrets_never_leave(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Grep every response, log line and the debug log of a busy run for the key and token."""

    def echo_key(body: dict[str, Any], n: int) -> Any:
        if n == 2:  # providers do echo keys back in errors (the key is disabled after it)
            return error(401, f"Invalid API Key: {TEST_KEY}")
        if n % 2 == 0:
            return Json({"error": {"message": f"bad auth header Bearer {TEST_KEY}"}}, 400)
        return text_stream("fine")

    log_file = tmp_path / "debug.log"
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    from kimi_proxy.server.observability import setup_logging

    setup_logging("debug", log_file, [TEST_KEY, TOKEN], log_prompts=True)
    try:
        with (
            proxy_for(echo_key, auth_token=TOKEN, max_retries=0) as proxy,
            httpx.Client() as client,
        ):
            headers = {"x-api-key": TOKEN}
            for stream in (False, True, False, True, False, True):
                response = client.post(
                    f"{proxy.url}/v1/messages", headers=headers, json={**BASIC, "stream": stream}
                )
                texts.append(response.text)
                texts.append(str(response.headers))
            for path in ("/health", "/v1/models", "/metrics"):
                texts.append(client.get(f"{proxy.url}{path}", headers=headers).text)
    finally:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            if getattr(handler, "baseFilename", None) == str(log_file) or (
                type(handler) is logging.StreamHandler
            ):
                root.removeHandler(handler)
                handler.close()
        logging.getLogger("kimi_proxy.flow").setLevel(logging.NOTSET)
    texts.append(caplog.text)
    texts.append(log_file.read_text())
    everything = "\n".join(texts)
    assert "Invalid API Key: [REDACTED]" in everything  # the error still says what happened
    assert "upstream request" in log_file.read_text()  # the debug log did record the flow
    assert TEST_KEY not in everything
    assert TOKEN not in everything
