"""Run the real kimi-proxy server (uvicorn, uvloop, httptools) against a scripted upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx

from kimi_proxy.config.search import SearchSettings
from kimi_proxy.config.settings import Settings
from kimi_proxy.providers.pool import Pool
from kimi_proxy.server.app import create_app
from kimi_proxy.server.state import ProxyState
from kimi_proxy.server.wire import BoundedHttpToolsProtocol
from support.upstream import Script, ScriptedUpstream, scripted_upstream, serve_in_thread

TEST_KEY = "gsk_test_secret_key_do_not_log_1234567890"


@dataclass
class Harness:
    url: str
    upstream: ScriptedUpstream
    settings: Settings
    app: Any = None
    clients: list[anthropic.Anthropic] = field(default_factory=list)

    @property
    def state(self) -> ProxyState:
        """The running proxy's state (its pool, feed, gateway)."""
        app = self.app
        while not hasattr(app, "state"):  # through the middleware to the Starlette app
            app = app.app
        state: ProxyState = app.state.proxy
        return state

    @property
    def pool(self) -> Pool:
        """The running proxy's provider pool (its keys, budgets, retired models)."""
        return self.state.pool

    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        """An official SDK client pointed at the proxy (closed when the harness stops)."""
        client = anthropic.Anthropic(base_url=self.url, api_key="anything", max_retries=0, **kwargs)
        self.clients.append(client)
        return client


@contextmanager
def serve_app(app: Any, port: int | None = None) -> Iterator[str]:
    """An app with the production server stack (uvloop, httptools)."""
    with serve_in_thread(app, loop="uvloop", http=BoundedHttpToolsProtocol, port=port) as url:
        yield url


@contextmanager
def serve_proxy(settings: Settings) -> Iterator[str]:
    """The real app with the production server stack (uvloop, httptools)."""
    with serve_app(create_app(settings)) as url:
        yield url


def proxy_settings(upstream_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "upstream_url": upstream_url,
        "api_key": TEST_KEY,
        "model": "kimi-big",
        "small_model": "kimi-small",
        "ping_interval": 5.0,
        "read_timeout": 5.0,
        "connect_timeout": 2.0,
        "max_retries": 2,
        "retry_budget": 5.0,
        "calibration_file": "off",  # each test's proxy starts from the prior
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def proxy_for(
    script: Script, *, search: SearchSettings | None = None, **overrides: Any
) -> Iterator[Harness]:
    """The real app on a scripted provider (and a web search backend, when given)."""
    with scripted_upstream(script) as upstream:
        settings = proxy_settings(upstream.base_url, **overrides)
        app = create_app(settings, search=search)
        with serve_app(app) as url:
            harness = Harness(url=url, upstream=upstream, settings=settings, app=app)
            try:
                yield harness
            finally:
                for client in harness.clients:
                    client.close()


def wait_healthy(url: str, seconds: float, log: Path | None = None) -> None:
    """Wait until a proxy answers `GET /health` (a started subprocess, say)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(f"{url}/health", timeout=0.5)
            return
        except httpx.HTTPError:
            detail = log.read_text() if log is not None and log.exists() else ""
            assert time.monotonic() < deadline, f"{url} did not come up. {detail}"
            time.sleep(0.05)
