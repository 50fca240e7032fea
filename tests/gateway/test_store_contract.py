"""The budgets' contract, held by both stores: the in-process one and Redis's Lua scripts on a
real `redis-server`. The same random sequences of requests, settlements and passing time get
the same answers from both, and no sequence ever lets more than a limit into any window."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from support.redis_server import RedisServer, redis_server

from kimi_proxy.gateway.store import LimitStore, MemoryStore, RedisStore, Settlement
from kimi_proxy.gateway.window import (
    MINUTE_MS,
    NEVER,
    Admitted,
    Claim,
    Refused,
    WindowSpec,
    windows_of,
)

LEASE_MS = 30_000


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


def claims(windows, tokens, concurrency, key_windows=()):  # type: ignore[no-untyped-def]
    """A user's claim (its bound three times its tokens, taken while another of its requests
    runs), and a provider key's when it has windows (half the tokens)."""
    mine = (Claim("user:a", windows, tokens, concurrency, bound_tokens=tokens * 3),)
    return mine + ((Claim("key:p:k", key_windows, tokens // 2),) if key_windows else ())


def run_both(
    redis: RedisServer, steps: list[tuple[str, int, int]], windows, concurrency, key_windows=()
):  # type: ignore[no-untyped-def]
    """Each step on both stores at the same explicit clock; the two lists of answers."""

    async def go() -> tuple[list[object], list[object]]:
        client = Redis.from_url(redis.url)
        await client.flushdb()
        stores: list[LimitStore] = [MemoryStore(), RedisStore(client, prefix="contract")]
        answers: tuple[list[object], list[object]] = ([], [])
        now = 1_000_000
        try:
            for n, (op, value, advance) in enumerate(steps):
                now += advance
                for store, out in zip(stores, answers, strict=True):
                    asked = claims(windows, value, concurrency, key_windows)
                    if op == "admit":
                        out.append(await store.admit(f"r{n}", asked, LEASE_MS, now))
                    else:  # settle an earlier request (it may not exist: a no-op)
                        done = Settlement(f"r{value}", asked, value * 7, give_back=value % 5 == 0)
                        await store.settle_many([done])
        finally:
            await client.aclose()
        return answers

    return asyncio.run(go())


steps = st.lists(
    st.tuples(
        st.sampled_from(["admit", "admit", "settle"]),
        st.integers(0, 400),
        st.integers(0, 20_000),
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=steps,
    rpm=st.integers(1, 5),
    tpm=st.integers(100, 1_500),
    key_rpm=st.one_of(st.none(), st.integers(1, 8)),
    concurrency=st.one_of(st.none(), st.integers(1, 3)),
)
def test_memory_and_redis_give_the_same_answers(
    redis: RedisServer, steps, rpm, tpm, key_rpm, concurrency
) -> None:  # type: ignore[no-untyped-def]
    windows = windows_of(rpm, tpm, None)
    key = windows_of(key_rpm, 700, None) if key_rpm else ()
    memory, shared = run_both(redis, steps, windows, concurrency, key)
    assert memory == shared


def test_concurrency_leases_agree_and_expire(redis: RedisServer) -> None:
    windows: tuple[WindowSpec, ...] = ()
    plan = [("admit", 1, 0), ("admit", 1, 0), ("admit", 1, 0), ("admit", 1, LEASE_MS)]
    memory, shared = run_both(redis, plan, windows, 2)
    assert memory == shared
    assert memory[:2] == [Admitted(), Admitted()]
    assert memory[2] == Refused("user:a", "concurrent streams", 1_000)
    assert memory[3] == Admitted()  # the first two leases expired, unrenewed


@settings(max_examples=200, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(1, 300), st.integers(0, 15_000)), max_size=60),
    rpm=st.integers(1, 6),
    tpm=st.integers(300, 1_000),
)
def test_no_window_of_sixty_seconds_ever_holds_more_than_the_limit(plan, rpm, tpm) -> None:  # type: ignore[no-untyped-def]
    store = MemoryStore()
    windows = windows_of(rpm, tpm, None)
    taken: list[tuple[int, int]] = []
    now = 0
    for n, (tokens, advance) in enumerate(plan):
        now += advance
        answer = asyncio.run(store.admit(f"r{n}", (Claim("u", windows, tokens),), LEASE_MS, now))
        if isinstance(answer, Admitted):
            taken.append((now, tokens))
        else:
            assert answer.after_ms == NEVER or 0 < answer.after_ms <= MINUTE_MS
    for start, _ in taken:
        inside = [t for at, t in taken if start <= at < start + MINUTE_MS]
        assert len(inside) <= rpm and sum(inside) <= tpm


def test_an_idle_user_gets_the_whole_rpm_at_once_then_waits_for_the_oldest() -> None:
    store = MemoryStore()
    windows = windows_of(3, None, None)

    def admit(n: int, now: int) -> object:
        return asyncio.run(store.admit(f"r{n}", (Claim("u", windows, 10),), LEASE_MS, now))

    assert [admit(n, 5_000) for n in range(3)] == [Admitted()] * 3
    assert admit(3, 20_000) == Refused("u", "requests a minute", 45_000)  # the first leaves at 65 s
    assert admit(4, 65_000) == Admitted()


def test_a_request_larger_than_a_limit_never_fits() -> None:
    store = MemoryStore()
    claim = Claim("u", windows_of(None, 100, None), 101)
    answer = asyncio.run(store.admit("r", (claim,), 1, 0))
    assert answer == Refused("u", "tokens a minute", NEVER)


def test_settled_usage_replaces_the_reservation() -> None:
    store = MemoryStore()
    windows = windows_of(None, 1_000, None)

    async def go() -> list[object]:
        first = await store.admit("a", (Claim("u", windows, 900),), 1, 0)
        refused = await store.admit("b", (Claim("u", windows, 200),), 1, 1)
        await store.settle_many([Settlement("a", (Claim("u", windows, 900),), 300)])  # used 300
        admitted = await store.admit("c", (Claim("u", windows, 700),), 1, 2)
        return [first, refused, admitted]

    first, refused, admitted = asyncio.run(go())
    assert first == Admitted() and isinstance(refused, Refused) and admitted == Admitted()


def test_a_share_divides_each_limit_rounding_up() -> None:
    assert [w.limit for w in windows_of(10, 1_000, 5_000, share=3)] == [4, 334, 1_667]


@pytest.mark.parametrize("tmp", [None])
def test_scripts_are_package_data(tmp: None, tmp_path: Path) -> None:
    from importlib.resources import files

    lua = files("kimi_proxy.gateway").joinpath("lua")
    assert {p.name for p in lua.iterdir()} >= {"admit.lua", "settle.lua"}


def test_a_request_claiming_two_subjects_takes_both_or_neither() -> None:
    store = MemoryStore()
    user = Claim("user:a", windows_of(5, None, None), 10)
    key = Claim("key:p:k", windows_of(1, None, None), 10)

    async def go() -> list[object]:
        first = await store.admit("r1", (user, key), 1, 0)
        second = await store.admit("r2", (user, key), 1, 1)  # the key's RPM of 1 is spent
        alone = await store.admit("r3", (user,), 1, 2)
        return [first, second, alone]

    first, second, alone = asyncio.run(go())
    assert first == Admitted() and alone == Admitted()
    assert isinstance(second, Refused) and second.subject == "key:p:k"
    log = store.allowances.subjects["user:a"].logs["requests a minute"]
    assert list(log.entries) == ["r1", "r3"]  # the refused request took nothing of the user's


def test_while_a_request_runs_the_next_takes_its_bound_on_both_stores(redis: RedisServer) -> None:
    """M4: the first request of a subject is admitted on its estimate, the ones beside it on
    their bound; once it ends, the next is on its estimate again."""
    windows = windows_of(None, 1_000, None)
    plan = [("admit", 300, 0), ("admit", 300, 0), ("settle", 0, 0), ("admit", 300, 0)]
    memory, shared = run_both(redis, plan, windows, 4)
    assert memory == shared
    # 300 on the estimate, then 900 (its bound) no longer fits; r0 ends (settled to 0 × 7 = 0
    # tokens, given back), and 300 fits again.
    assert memory[0] == Admitted()
    assert isinstance(memory[1], Refused) and memory[1].limit == "tokens a minute"
    assert memory[2] == Admitted()


def test_both_stores_admit_settle_and_report_a_dollars_budget_alike(redis: RedisServer) -> None:
    """A dollars window: admitted on the worst case, settled to the real cost, and what it
    holds (the dashboard's bar) read back the same from both stores."""
    windows = windows_of(None, None, None, daily_usd=1.0, wall_ms=1_796_500_000_000)
    asked = (Claim("user:a", windows, 100, None, 600_000),)  # $0.60 at worst

    async def go() -> list[tuple[object, ...]]:
        client = Redis.from_url(redis.url)
        await client.flushdb()
        seen = []
        try:
            for store in (MemoryStore(), RedisStore(client, prefix="dollars")):
                first = await store.admit("r1", asked, LEASE_MS, 1_000_000)
                second = await store.admit("r2", asked, LEASE_MS, 1_000_000)
                [held] = await store.held([("user:a", windows[0].name)])
                await store.settle_many([Settlement("r1", asked, 100, used_usd=50_000)])
                [settled] = await store.held([("user:a", windows[0].name)])
                third = await store.admit("r3", asked, LEASE_MS, 1_000_000)
                seen.append((first, type(second), held, settled, third))
        finally:
            await client.aclose()
        return seen

    memory, shared = asyncio.run(go())
    assert memory == shared == (Admitted(), Refused, 600_000, 50_000, Admitted())
