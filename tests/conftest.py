"""Shared fixtures: the real proxy in front of a scripted OpenAI-compatible upstream.

Before anything is collected, the environment is the suite's own (`support/hermetic.py`): no
test reads the caller's HOME, config file, provider keys, `KIMI_*` or proxy variables.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import uvloop
from support.hermetic import scrub
from support.proxy import Harness, proxy_for
from support.upstream import text_stream

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    home = Path(tempfile.mkdtemp(prefix="kimi-proxy-tests-home-"))
    scrub(os.environ, home, REPO / ".test-cache")
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


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
