"""Shared fixtures: the real proxy in front of a scripted OpenAI-compatible upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping

import pytest
import uvloop
from support.proxy import Harness, proxy_for
from support.upstream import text_stream


@pytest.fixture(scope="module")
def proxy() -> Iterator[Harness]:
    """One proxy + scripted upstream per module; tests set `proxy.upstream.script`."""
    with proxy_for(lambda body, n: text_stream("default reply")) as harness:
        yield harness


@pytest.fixture(autouse=True)
def _reset_upstream(request: pytest.FixtureRequest) -> None:
    if "proxy" in request.fixturenames:
        harness = request.getfixturevalue("proxy")
        harness.upstream.requests.clear()
        harness.pool.forget()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The provider transport's wire cases run on asyncio's own loop and on uvloop, which is
    the server's; everything else on asyncio's."""
    if item.path.name == "test_transport.py":
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
