"""A team gateway on a real `redis-server`: three real `kimi-proxy serve` processes share the
users, each user's limits and the provider keys' limits; a scripted provider counts every
request per key in every 60-second window and the test fails on any over the limit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from support.instances import Instance, instances
from support.redis_server import RedisServer, redis_server
from support.sse_client import BASIC, parse_sse
from support.upstream import (
    Pause,
    Reply,
    ScriptedUpstream,
    Stream,
    chunk,
    scripted_upstream,
    usage,
)

from kimi_proxy.gateway.redis_users import RedisUsers
from kimi_proxy.gateway.users import UserLimits

KEY_RPM = 12
USER_RPM = 3
CONFIG = """
[gateway]
lease_seconds = {lease}

[[provider]]
name = "scripted"
base_url = "{url}"
keys = ["${{KEY_A}}", "${{KEY_B}}"]
limits = {{ rpm = {rpm} }}

[family.kimi]
candidates = ["scripted:kimi-k2"]

[route]
max_wait_s = {max_wait}
"""


class CountingProvider:
    """Answers every request with a short stream carrying its own usage figures, counts each
    key's requests in every 60 s window, and notes any over `rpm`."""

    def __init__(self, rpm: int, pause: float = 0.0) -> None:
        self.rpm = rpm
        self.pause = pause
        self.lock = threading.Lock()
        self.arrivals: dict[str, list[float]] = {}
        self.violations: list[str] = []
        self.sent = {"input": 0, "cached": 0, "output": 0}
        self.upstream: ScriptedUpstream | None = None

    def __call__(self, body: dict[str, Any], n: int) -> Reply:
        assert self.upstream is not None
        key = self.upstream.requests[n].headers.get("authorization", "")[-6:]
        now = time.monotonic()
        with self.lock:
            seen = [t for t in self.arrivals.get(key, []) if t > now - 60]
            if len(seen) >= self.rpm:
                self.violations.append(f"{key}: request {len(seen) + 1} in 60 s")
            self.arrivals[key] = [*seen, now]
            prompt, output, cached = 100 + n, 3 + n % 4, (n % 3) * 10
            self.sent["input"] += prompt
            self.sent["cached"] += cached
            self.sent["output"] += output
        items: list[Any] = [chunk({"role": "assistant", "content": ""})]
        if self.pause:
            items.append(Pause(self.pause))
        items += [
            chunk({"content": "ok"}),
            chunk({}, finish="stop"),
            chunk(choices=False, usage=usage(prompt, output, cached)),
        ]
        return Stream(items)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis", appendonly=True) as server:
        yield server


def add_users(redis: RedisServer, names: list[str], limits: UserLimits) -> dict[str, str]:
    async def go() -> dict[str, str]:
        client = Redis.from_url(redis.url)
        try:
            store = RedisUsers(client)
            return {name: await store.add(name, limits, time.time()) for name in names}
        finally:
            await client.aclose()

    return asyncio.run(go())


OPERATOR = "operator-token-0123456789abcdef-0123"


def gateway_env(
    tmp_path: Path,
    redis: RedisServer,
    provider: ScriptedUpstream,
    lease: float = 30,
    max_wait: float = 0,
) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.format(lease=lease, url=provider.base_url, rpm=KEY_RPM, max_wait=max_wait)
    )
    return {
        "KIMI_PROXY_CONFIG": str(config),
        "KIMI_REDIS_URL": redis.url,
        "KIMI_PROXY_AUTH_TOKEN": OPERATOR,  # the dashboard's and /metrics' (users never open them)
        "KEY_A": "key-aaaaaa",
        "KEY_B": "key-bbbbbb",
        "KIMI_USERS_FILE": str(tmp_path / "unused-users.json"),
    }


def post(url: str, key: str, stream: bool = True, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/messages",
        json={**BASIC, "stream": stream},
        headers={"authorization": f"Bearer {key}"},
        timeout=timeout,
    )


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_proxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.fixture
def provider() -> Iterator[tuple[CountingProvider, ScriptedUpstream]]:
    counting = CountingProvider(KEY_RPM)
    with scripted_upstream(counting, ["kimi-k2"]) as upstream:
        counting.upstream = upstream
        yield counting, upstream


def test_three_instances_thirty_clients_ten_users_never_exceed_a_limit(
    tmp_path: Path, redis: RedisServer, provider: tuple[CountingProvider, ScriptedUpstream]
) -> None:
    counting, upstream = provider
    names = [f"user{n}" for n in range(10)]
    keys = add_users(redis, names, UserLimits(rpm=USER_RPM))
    env = gateway_env(tmp_path, redis, upstream)
    with instances(tmp_path, 3, **env) as (a, b, c):
        urls = [a.url, b.url, c.url]

        def client(n: int) -> list[tuple[str, httpx.Response]]:
            name = names[n % 10]
            return [(name, post(urls[(n + i) % 3], keys[name])) for i in range(2)]

        with ThreadPoolExecutor(30) as pool:
            results = [r for rs in pool.map(client, range(30)) for r in rs]
        time.sleep(1.2)  # metered usage is flushed every half second
        report = cli("usage", "--format", "json", "--by", "user", KIMI_REDIS_URL=redis.url)

    assert counting.violations == []
    admitted = [name for name, r in results if r.status_code == 200]
    for name in names:
        assert admitted.count(name) <= USER_RPM
    assert len(upstream.requests) <= 2 * KEY_RPM
    assert len(admitted) == len(upstream.requests) > 0
    refused = [(name, r) for name, r in results if r.status_code != 200]
    assert refused, "limits small enough to bind refuse some requests"
    by_user = by_provider = 0
    for name, response in refused:
        assert response.status_code == 429, response.text
        assert float(response.headers["retry-after"]) > 0
        message = response.json()["error"]["message"]
        if f"User {name!r}" in message:
            assert "not the provider's" in message and "requests a minute" in message
            by_user += 1
        else:
            assert "User " not in message
            by_provider += 1
    # 24 key slots over 10 users of 3 each: some users reach 3 (then their own limit refuses
    # them), some do not (then the keys do). The user's claim is checked first.
    assert by_user and by_provider

    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)
    assert {r["user"] for r in rows} <= set(names)
    assert sum(r["requests"] for r in rows) == len(results)
    assert sum(r["errors"] for r in rows) == len(refused)
    # As in Anthropic's usage, input_tokens are those not read from the cache.
    cached = sum(r["cached_tokens"] for r in rows)
    assert cached == counting.sent["cached"] > 0
    assert sum(r["input_tokens"] for r in rows) + cached == counting.sent["input"]
    assert sum(r["output_tokens"] for r in rows) == counting.sent["output"]
    assert all({"cost_usd", "requests", "errors"} <= set(r) for r in rows)


def test_a_killed_instances_leases_expire_and_the_others_keep_serving(
    tmp_path: Path, redis: RedisServer
) -> None:
    counting = CountingProvider(KEY_RPM, pause=30)
    with scripted_upstream(counting, ["kimi-k2"]) as upstream:
        counting.upstream = upstream
        keys = add_users(redis, ["solo"], UserLimits(concurrency=1))
        env = gateway_env(tmp_path, redis, upstream, lease=2)
        with (
            instances(tmp_path, 2, **env) as (doomed, survivor),
            httpx.Client(timeout=30) as client,
            client.stream(
                "POST",
                f"{doomed.url}/v1/messages",
                json={**BASIC, "stream": True},
                headers={"authorization": f"Bearer {keys['solo']}"},
            ) as first,
        ):
            lines = first.iter_lines()  # kept: a dropped iterator closes the stream
            next(lines)  # the stream is open: its lease is held
            held = post(survivor.url, keys["solo"], stream=False, timeout=5)
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait(timeout=10)
            killed = time.monotonic()
            counting.pause = 0
            while True:
                answer = post(survivor.url, keys["solo"], stream=False)
                if answer.status_code == 200:
                    break
                assert answer.status_code == 429
                assert time.monotonic() - killed < 4, "the lease outlived its 2 s"
                time.sleep(0.2)
            waited = time.monotonic() - killed
    assert waited > 0.5  # the lease, not the disconnect, freed it
    assert held.status_code == 429 and "concurrent streams" in held.json()["error"]["message"]
    assert counting.violations == []


def test_sigterm_lets_twenty_streams_finish_and_settles_their_leases(
    tmp_path: Path, redis: RedisServer
) -> None:
    counting = CountingProvider(1_000, pause=1.0)
    with scripted_upstream(counting, ["kimi-k2"]) as upstream:
        counting.upstream = upstream
        keys = add_users(redis, ["team"], UserLimits(concurrency=20))
        env = gateway_env(tmp_path, redis, upstream, max_wait=5)
        with instances(tmp_path, 1, **env) as (instance,):
            with ThreadPoolExecutor(20) as pool:
                streams = [pool.submit(post, instance.url, keys["team"]) for _ in range(20)]
                deadline = time.monotonic() + 15
                while len(upstream.requests) < 20:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                instance.process.send_signal(signal.SIGTERM)
                results = [s.result(timeout=60) for s in streams]
            assert instance.process.wait(timeout=30) == 0

        async def leases() -> int:
            client = Redis.from_url(redis.url)
            try:
                return int(await client.zcard("kimi:budget:user:team:leases"))
            finally:
                await client.aclose()

        held = asyncio.run(leases())
    for response in results:
        events = [name for name, _ in parse_sse(response.content)]
        assert response.status_code == 200 and events[-1] == "message_stop"
    assert held == 0  # settled at the end, not left to expire


def ready(instance: Instance) -> httpx.Response:
    return httpx.get(f"{instance.url}/ready", timeout=5)


def test_redis_down_follows_each_policy_then_recovers_and_keeps_users_and_usage(
    tmp_path: Path, redis: RedisServer, provider: tuple[CountingProvider, ScriptedUpstream]
) -> None:
    _, upstream = provider
    keys = add_users(redis, ["ann", "bob"], UserLimits(rpm=50))
    env = gateway_env(tmp_path, redis, upstream)
    with (
        instances(tmp_path / "open", 1, **env, KIMI_ON_REDIS_DOWN="fail_open") as (opened,),
        instances(tmp_path / "closed", 1, **env, KIMI_ON_REDIS_DOWN="fail_closed") as (closed,),
    ):
        for instance in (opened, closed):
            assert post(instance.url, keys["ann"]).status_code == 200
        time.sleep(1.2)
        before = cli("usage", "--format", "json", "--by", "user", KIMI_REDIS_URL=redis.url)
        users_before = cli("users", "list", KIMI_REDIS_URL=redis.url)

        redis.stop()
        time.sleep(1.2)  # each instance's heartbeat notices
        down = {
            "open": (ready(opened), post(opened.url, keys["bob"])),
            "closed": (ready(closed), post(closed.url, keys["bob"])),
        }
        health = httpx.get(f"{closed.url}/health", timeout=5)
        metrics = httpx.get(
            f"{opened.url}/metrics", headers={"authorization": f"Bearer {OPERATOR}"}
        ).text

        redis.start()  # the same data folder: AOF brings users and usage back
        deadline = time.monotonic() + 10
        while ready(closed).status_code != 200:
            assert time.monotonic() < deadline, "did not recover without a restart"
            time.sleep(0.1)
        after_requests = [post(i.url, keys["bob"]).status_code for i in (opened, closed)]
        time.sleep(1.2)
        after = cli("usage", "--format", "json", "--by", "user", KIMI_REDIS_URL=redis.url)
        users_after = cli("users", "list", KIMI_REDIS_URL=redis.url)

    ready_open, served = down["open"]
    assert ready_open.status_code == 200 and ready_open.json()["redis"] == "down"
    assert served.status_code == 200  # fail_open: this instance's share of bob's limit
    ready_closed, refused = down["closed"]
    assert ready_closed.status_code == 503 and ready_closed.json()["status"] == "redis_down"
    assert refused.status_code == 503
    assert "fail_closed" in refused.json()["error"]["message"]
    assert health.status_code == 200  # liveness never asks Redis
    assert "kimi_redis_up 0.0" in metrics
    assert "kimi_redis_fallback_requests_total 1.0" in metrics
    assert after_requests == [200, 200]

    assert users_after.stdout == users_before.stdout and "ann\tactive" in users_after.stdout
    rows_before = {r["user"]: r for r in json.loads(before.stdout)}
    rows_after = {r["user"]: r for r in json.loads(after.stdout)}
    assert rows_after["ann"] == rows_before["ann"]  # survived the restart
    # Served while down (kept and flushed later), refused while down, two after.
    assert (rows_after["bob"]["requests"], rows_after["bob"]["errors"]) == (4, 1)


def test_users_on_redis_bad_input_and_revocation_on_every_instance_within_a_second(
    tmp_path: Path, redis: RedisServer, provider: tuple[CountingProvider, ScriptedUpstream]
) -> None:
    _, upstream = provider
    on_redis = {"KIMI_REDIS_URL": redis.url}
    added = cli("users", "add", "carol", "--rpm", "5", **on_redis)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    listed = cli("users", "list", **on_redis).stdout
    for bad in (
        ["add", "carol"],  # exists
        ["add", "dave", "--rpm", "-1"],
        ["add", "erin", "--tpm", "lots"],
        ["add", "bad name!"],
        ["limits", "nobody", "--rpm", "3"],
    ):
        refused = cli("users", *bad, **on_redis)
        assert refused.returncode == 2, (bad, refused.stderr)
        assert "Traceback" not in refused.stderr and "kimi-proxy" in refused.stderr
    assert cli("users", "list", **on_redis).stdout == listed  # nothing half-written
    env = gateway_env(tmp_path, redis, upstream, max_wait=5)
    with instances(tmp_path, 2, **env) as (a, b):
        assert [post(i.url, key).status_code for i in (a, b)] == [200, 200]
        assert post(a.url, "kpu_" + "x" * 43).status_code == 401
        assert post(a.url, "not-even-a-key").status_code == 401
        assert cli("users", "revoke", "carol", **on_redis).returncode == 0
        revoked = time.monotonic()
        answers = [post(i.url, key) for i in (a, b)]
        while any(r.status_code != 401 for r in answers):
            assert time.monotonic() - revoked < 1.0, "a revoked key still worked after 1 s"
            time.sleep(0.05)
            answers = [post(i.url, key) for i in (a, b)]
    assert all(r.json()["error"]["type"] == "authentication_error" for r in answers)


def test_a_client_that_leaves_mid_stream_frees_its_slot_at_once_on_every_instance(
    tmp_path: Path, redis: RedisServer
) -> None:
    counting = CountingProvider(KEY_RPM, pause=30)
    with scripted_upstream(counting, ["kimi-k2"]) as upstream:
        counting.upstream = upstream
        keys = add_users(redis, ["solo"], UserLimits(concurrency=1))
        env = gateway_env(tmp_path, redis, upstream, lease=30, max_wait=5)
        with instances(tmp_path, 2, **env) as (a, b):
            with (
                httpx.Client(timeout=30) as client,
                client.stream(
                    "POST",
                    f"{a.url}/v1/messages",
                    json={**BASIC, "stream": True},
                    headers={"authorization": f"Bearer {keys['solo']}"},
                ) as first,
            ):
                lines = first.iter_lines()
                next(lines)
                held = post(b.url, keys["solo"], stream=False, timeout=5)
            left = time.monotonic()  # the client has gone; the lease has 30 s to run
            counting.pause = 0
            while (answer := post(b.url, keys["solo"], stream=False)).status_code != 200:
                assert time.monotonic() - left < 2, answer.text
                time.sleep(0.1)
    assert held.status_code == 429


def test_behind_a_balancer_every_instance_shows_the_same_sessions_and_last_requests(
    tmp_path: Path, redis: RedisServer, provider: tuple[CountingProvider, ScriptedUpstream]
) -> None:
    """#26 item 7: the status line flipped between real data and "no answer yet" behind a
    balancer (a session's status lived in one instance), and so did the dashboard's list."""
    _, upstream = provider
    keys = add_users(redis, ["ann"], UserLimits())
    env = gateway_env(tmp_path, redis, upstream)
    with instances(tmp_path, 2, **env) as (a, b):
        session = {"x-claude-code-session-id": "sess-shared-1"}
        for url in (a.url, a.url, b.url):
            answer = httpx.post(
                f"{url}/v1/messages",
                json=BASIC,
                headers={"authorization": f"Bearer {keys['ann']}", **session},
                timeout=30,
            )
            assert answer.status_code == 200
        time.sleep(1.2)  # each instance flushes what it served within half a second
        for instance in (a, b):
            status = httpx.get(
                f"{instance.url}/status/session/sess-shared-1",
                headers={"authorization": f"Bearer {keys['ann']}"},
            ).json()
            assert status["known"] and status["requests"] == 3 and status["provider"]
            with (
                httpx.Client(timeout=10) as client,
                client.stream(
                    "GET",
                    f"{instance.url}/dashboard/events",
                    headers={"authorization": f"Bearer {OPERATOR}"},
                ) as feed,
            ):
                snapshot = next(
                    json.loads(line[5:]) for line in feed.iter_lines() if line.startswith("data:")
                )
            assert [r["user"] for r in snapshot["recent"]] == ["ann", "ann", "ann"]


def test_the_admin_api_adds_a_user_whose_key_works_on_every_instance_and_revokes_it(
    tmp_path: Path, redis: RedisServer, provider: tuple[CountingProvider, ScriptedUpstream]
) -> None:
    _, upstream = provider
    env = gateway_env(tmp_path, redis, upstream, max_wait=5)
    operator = {"x-api-key": OPERATOR}
    with instances(tmp_path, 2, **env) as (a, b):
        made = httpx.post(f"{a.url}/admin/users", json={"name": "dana", "rpm": 5}, headers=operator)
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        added = time.monotonic()
        while post(b.url, key).status_code != 200:  # the other instance knows her at once
            assert time.monotonic() - added < 1.0, "the new key did not work on the other instance"
            time.sleep(0.05)
        listed = httpx.get(f"{b.url}/admin/users", headers=operator).json()["data"]
        assert [(u["name"], u["rpm"]) for u in listed] == [("dana", 5)]
        assert key not in json.dumps(listed) and "key_hash" not in json.dumps(listed)
        patched = httpx.patch(f"{b.url}/admin/users/dana", json={"revoked": True}, headers=operator)
        assert patched.json()["state"] == "revoked"
        revoked = time.monotonic()
        while any(post(i.url, key).status_code != 401 for i in (a, b)):
            assert time.monotonic() - revoked < 1.0, "a revoked key still worked after 1 s"
            time.sleep(0.05)
        trail = httpx.get(f"{a.url}/admin/audit", headers=operator).json()["data"]
    assert [(e["who"], e["action"], e["target"]) for e in trail] == [
        ("api", "add", "dana"),
        ("api", "revoke", "dana"),
    ]
    assert key not in json.dumps(trail)
    printed = cli("audit", KIMI_REDIS_URL=redis.url)
    assert printed.returncode == 0 and printed.stdout.count('"target":"dana"') == 2


def test_a_teams_rpm_holds_across_its_members_and_both_instances(
    tmp_path: Path, redis: RedisServer, provider: tuple[CountingProvider, ScriptedUpstream]
) -> None:
    _, upstream = provider
    on_redis = {"KIMI_REDIS_URL": redis.url}
    assert cli("teams", "add", "eng", "--rpm", "3", **on_redis).returncode == 0
    keys = []
    for name in ("ann", "bo"):
        added = cli("users", "add", name, "--rpm", "10", "--team", "eng", **on_redis)
        assert added.returncode == 0, added.stderr
        keys.append(added.stdout.strip().splitlines()[-1])
    refused = cli("users", "add", "cy", "--team", "nope", **on_redis)
    assert refused.returncode == 2 and "No team named 'nope'" in refused.stderr
    env = gateway_env(tmp_path, redis, upstream, max_wait=5)
    with instances(tmp_path, 2, **env) as (a, b):
        plan = [(a, keys[0]), (b, keys[1]), (a, keys[1]), (b, keys[0])]
        answers = [post(instance.url, key, stream=False) for instance, key in plan]
        deadline = time.monotonic() + 5  # the instances flush usage every half second
        while True:
            report = cli("usage", "--by", "team", "--format", "json", **on_redis)
            rows = {r["team"]: r for r in json.loads(report.stdout or "[]")}
            if rows.get("eng", {}).get("requests") == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        over_http = httpx.get(
            f"{b.url}/admin/usage",
            params={"team": "eng", "by": "team"},
            headers={"x-api-key": OPERATOR},
        ).json()["data"]
    assert [(r["team"], r["requests"]) for r in over_http] == [("eng", 4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert (rows["eng"]["requests"], rows["eng"]["errors"]) == (4, 1), report.stdout
    message = answers[-1].json()["error"]["message"]
    assert message.startswith('team "eng": its limit of requests a minute is reached'), message
    listed = cli("users", "list", **on_redis).stdout
    assert "ann\tactive\trpm 10\tteam eng" in listed
    assert cli("teams", "remove", "eng", **on_redis).returncode == 2  # it still has members


def test_a_users_daily_dollars_hold_across_both_instances_and_end_with_a_402(
    tmp_path: Path, redis: RedisServer, provider: tuple[CountingProvider, ScriptedUpstream]
) -> None:
    """Priced at $1,000 a million tokens (the config file's price for a model the catalog does
    not know), each answer costs about $0.11 and may cost up to $1.02 (its whole answer
    budget): with a $1.50 day, requests are admitted while what is spent leaves room for the
    worst case, on either instance, and never past the budget."""
    _, upstream = provider
    env = gateway_env(tmp_path, redis, upstream, max_wait=5)
    config = Path(env["KIMI_PROXY_CONFIG"])
    config.write_text(
        config.read_text()
        + '\n[provider.models."kimi-k2"]\nprices = { input = 1000, output = 1000 }\n'
    )
    on_redis = {"KIMI_REDIS_URL": redis.url, "KIMI_PROXY_CONFIG": str(config)}
    added = cli("users", "add", "fay", "--daily-usd", "1.50", **on_redis)
    assert added.returncode == 0 and "$1.50 a day" in added.stdout, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    with instances(tmp_path, 2, **env) as (a, b):
        answers = []
        for n in range(20):
            answers.append(post((a, b)[n % 2].url, key, stream=False))
            if answers[-1].status_code != 200:
                break
            time.sleep(0.1)  # the settlement (real cost) reaches Redis
        deadline = time.monotonic() + 5
        while True:
            report = cli("usage", "--user", "fay", "--by", "user", "--format", "json", **on_redis)
            rows = json.loads(report.stdout or "[]")
            served = sum(r.status_code == 200 for r in answers)
            if (rows and rows[0]["requests"] == len(answers)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    refused = answers[-1]
    assert refused.status_code == 402, [r.status_code for r in answers]
    error = refused.json()["error"]
    assert error["type"] == "billing_error"
    assert "The daily budget of user 'fay', $1.50: $0." in error["message"]
    assert "resets at 00:00 UTC" in error["message"]
    assert served >= 3
    assert 0 < rows[0]["cost_usd"] <= 1.50, rows  # never admitted past the budget
