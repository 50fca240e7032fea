"""Who may see the dashboard: behind the proxy token when one is set (the page keeps it in a
cookie, not the address bar), and not at all beyond loopback unless enabled."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.providers import pooled_proxy
from support.proxy import proxy_settings, serve_app
from support.upstream import scripted_upstream, text_stream

from kimi_proxy.gateway.users import UserFile, UserLimits
from kimi_proxy.server.app import create_app

TOKEN = "dashboard-test-token-1234567890"


@contextmanager
def proxy(**overrides: Any) -> Iterator[str]:
    with scripted_upstream(lambda b, n: text_stream("ok")) as upstream:
        settings = proxy_settings(upstream.base_url, **overrides)
        with serve_app(create_app(settings)) as url:
            yield url


def first_event(client: httpx.Client, url: str, **kwargs: Any) -> tuple[int, str]:
    with client.stream("GET", url, **kwargs) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, response.text
        for line in response.iter_lines():
            if line.startswith("event:"):
                return 200, line
    raise AssertionError("no event")


def test_with_a_token_the_page_and_its_feed_need_it() -> None:
    with proxy(auth_token=TOKEN) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/dashboard").status_code == 401
        assert first_event(client, "/dashboard/events")[0] == 401
        assert client.get("/dashboard?token=wrong").status_code == 401
        entered = client.get(f"/dashboard?token={TOKEN}")
        assert entered.status_code == 303 and entered.headers["location"] == "/dashboard"
        cookie = entered.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
        page = client.get("/dashboard")  # the cookie, now in the client's jar
        assert page.status_code == 200 and "<title>kimi-proxy</title>" in page.text
        assert first_event(client, "/dashboard/events") == (200, "event: snapshot")
        client.cookies.clear()
        assert client.get("/dashboard/static/dashboard.js").status_code == 401
        headers = {"authorization": f"Bearer {TOKEN}"}
        assert client.get("/dashboard/static/dashboard.js", headers=headers).status_code == 200
        assert (
            client.get("/v1/models", headers={"cookie": f"kimi_dashboard={TOKEN}"}).status_code
            == 401
        )


@pytest.mark.parametrize(("dashboard", "status"), [("auto", 404), ("off", 404), ("on", 200)])
def test_beyond_loopback_the_dashboard_is_off_unless_enabled(dashboard: str, status: int) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    with (
        proxy(host="0.0.0.0", auth_token=TOKEN, dashboard=dashboard) as url,
        httpx.Client(base_url=url, timeout=10, headers=headers) as client,
    ):
        assert client.get("/dashboard").status_code == status
        assert first_event(client, "/dashboard/events")[0] == status
        assert client.get("/status/session/x").status_code == 200  # the status line's route


def test_a_page_of_its_own_origin_is_not_a_cross_site_request() -> None:
    with proxy() as url, httpx.Client(base_url=url, timeout=10) as client:
        own = url.replace("http://", "")
        assert client.get("/dashboard", headers={"origin": f"http://{own}"}).status_code == 200
        other = client.get("/dashboard", headers={"origin": "http://evil.example"})
        assert other.status_code == 403


def test_the_page_is_never_framed_and_its_cookie_stays_on_tls() -> None:
    """Lows: no framing or nosniff headers; a cookie without `Secure` behind a TLS balancer."""
    with proxy(auth_token=TOKEN) as url, httpx.Client(base_url=url, timeout=10) as client:
        entered = client.get(f"/dashboard?token={TOKEN}", headers={"x-forwarded-proto": "https"})
        assert "Secure" in entered.headers["set-cookie"]
        assert "Secure" not in client.get(f"/dashboard?token={TOKEN}").headers["set-cookie"]
        for path in ("/dashboard", "/dashboard/static/dashboard.js"):
            page = client.get(path, headers={"x-api-key": TOKEN})
            assert page.headers["x-frame-options"] == "DENY"
            assert page.headers["x-content-type-options"] == "nosniff"
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


BUDGETED = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-key-0001"]
[provider.models."kimi-a"]
prices = { input = 1000, output = 1000 }
[family.kimi]
candidates = ["alpha:kimi-a"]
[route]
default = "kimi"
"""


def test_the_dashboard_shows_each_dollar_budget_and_what_is_spent(tmp_path: Path) -> None:
    """A team lead sees each user's budget fill up: the bars' data in the dashboard's feed."""
    users = tmp_path / "users.json"
    env = {**os.environ, "KIMI_USERS_FILE": str(users)}
    made = subprocess.run(
        [sys.executable, "-m", "kimi_proxy", "users", "add", "ann", "--daily-usd", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = made.stdout.strip().splitlines()[-1]
    providers = {"alpha": lambda b, n: text_stream("ok")}
    with (
        pooled_proxy(tmp_path, BUDGETED, providers, auth_token=TOKEN, users_file=users) as pool,
        httpx.Client(base_url=pool.url, timeout=10) as client,
    ):
        asked = {"model": "claude-sonnet-4-5", "max_tokens": 50}
        asked["messages"] = [{"role": "user", "content": "hi"}]
        assert (
            client.post("/v1/messages", json=asked, headers={"x-api-key": key}).status_code == 200
        )
        with client.stream("GET", "/dashboard/events", headers={"x-api-key": TOKEN}) as feed:
            data = next(
                json.loads(line[len("data: ") :])
                for line in feed.iter_lines()
                if line.startswith("data: ") and '"budgets"' in line
            )
    [bar] = data["budgets"]
    assert (bar["who"], bar["budget"], bar["limit_usd"]) == ("user ann", "daily", 5.0)
    assert 0 < bar["spent_usd"] < 5.0  # the request's real cost, settled


@pytest.mark.parametrize("stream", [False, True])
def test_a_web_search_turn_settles_the_users_dollars_to_its_real_cost(
    tmp_path: Path, stream: bool
) -> None:
    """Reserved at its worst case (its whole answer budget), a turn of several model calls is
    settled to what it cost, streamed or not."""
    users = tmp_path / "users.json"
    key = UserFile(users).add("ann", UserLimits(daily_usd=5.0))
    providers = {"alpha": lambda b, n: text_stream("ok")}  # 10 + 1 tokens: $0.011
    with (
        pooled_proxy(tmp_path, BUDGETED, providers, auth_token=TOKEN, users_file=users) as pool,
        httpx.Client(base_url=pool.url, timeout=10) as client,
    ):
        asked = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 500,  # a worst case of more than $0.50
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        }
        answered = client.post("/v1/messages", json=asked, headers={"x-api-key": key})
        assert answered.status_code == 200
        deadline = time.monotonic() + 5
        while True:
            [bar] = asyncio.run(pool.harness.state.gateway.budgets())
            if bar["spent_usd"] < 0.05 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert bar["spent_usd"] == pytest.approx(0.011)
