"""Shared fixtures: the real proxy in front of a scripted OpenAI-compatible upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
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
