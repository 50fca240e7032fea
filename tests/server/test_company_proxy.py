"""The whole path behind a company proxy: the official SDK → the real kimi-proxy server (uvloop)
→ a CONNECT tunnel named by HTTPS_PROXY → TLS → an https provider (the scripted upstream)."""

from __future__ import annotations

from pathlib import Path

import anthropic
import httpx
import pytest
import trustme
from support.company_proxy import clear_proxy_env, connect_proxy_in_thread
from support.proxy import proxy_settings, serve_proxy
from support.upstream import scripted_upstream, text_stream

REPLY = "Hello through the tunnel."


def test_an_https_provider_is_reached_through_https_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clear_proxy_env(monkeypatch)
    authority = trustme.CA()
    provider_pem = tmp_path / "provider.pem"
    authority.issue_cert("provider.test").private_key_and_cert_chain_pem.write_to_path(
        str(provider_pem)
    )
    company_ca = tmp_path / "company-ca.pem"
    authority.cert_pem.write_to_path(str(company_ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(company_ca))
    with (
        connect_proxy_in_thread() as (proxy_port, heads),
        scripted_upstream(
            lambda body, n: text_stream(REPLY), ssl_certfile=str(provider_pem)
        ) as upstream,
    ):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
        # provider.test resolves nowhere: only the company proxy takes it to the upstream.
        port = httpx.URL(upstream.base_url).port
        with serve_proxy(proxy_settings(f"https://provider.test:{port}/v1")) as url:
            client = anthropic.Anthropic(base_url=url, api_key="anything", max_retries=0)
            with client.messages.stream(
                model="claude-sonnet-5-5",
                max_tokens=100,
                messages=[{"role": "user", "content": "hi"}],
            ) as stream:
                text = "".join(stream.text_stream)
            client.close()
    assert text == REPLY
    assert len(upstream.requests) == 1
    assert heads[0].startswith(f"CONNECT provider.test:{port} HTTP/1.1\r\n".encode())
