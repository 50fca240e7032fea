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

from kimi_proxy.gateway.store import LimitStore, MemoryStore, RedisStore
from kimi_proxy.gateway.window import (
    MINUTE_MS,
    NEVER,
    Admitted,
    Refused,
    WindowSpec,
    windows_of,
)

LEASE_MS = 30_000


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


def run_both(redis: RedisServer, steps: list[tuple[str, int, int]], windows, concurrency):  # type: ignore[no-untyped-def]
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
                    if op == "admit":
                        out.append(
                            await store.admit(
                                "user:a", f"r{n}", windows, value, concurrency, LEASE_MS, now
                            )
                        )
                    else:  # settle the n-th earlier request (it may not exist: a no-op)
                        await store.settle("user:a", f"r{value}", windows, value * 7)
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
@given(steps=steps, rpm=st.integers(1, 5), tpm=st.integers(100, 1_500))
def test_memory_and_redis_give_the_same_answers(redis: RedisServer, steps, rpm, tpm) -> None:  # type: ignore[no-untyped-def]
    windows = windows_of(rpm, tpm, None)
    memory, shared = run_both(redis, steps, windows, None)
    assert memory == shared


def test_concurrency_leases_agree_and_expire(redis: RedisServer) -> None:
    windows: tuple[WindowSpec, ...] = ()
    plan = [("admit", 1, 0), ("admit", 1, 0), ("admit", 1, 0), ("admit", 1, LEASE_MS)]
    memory, shared = run_both(redis, plan, windows, 2)
    assert memory == shared
    assert memory[:2] == [Admitted(), Admitted()]
    assert memory[2] == Refused("concurrent streams", 1_000)
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
        answer = asyncio.run(store.admit("u", f"r{n}", windows, tokens, None, LEASE_MS, now))
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
        return asyncio.run(store.admit("u", f"r{n}", windows, 10, None, LEASE_MS, now))

    assert [admit(n, 5_000) for n in range(3)] == [Admitted()] * 3
    assert admit(3, 20_000) == Refused("requests a minute", 45_000)  # the first leaves at 65 s
    assert admit(4, 65_000) == Admitted()


def test_a_request_larger_than_a_limit_never_fits() -> None:
    store = MemoryStore()
    answer = asyncio.run(store.admit("u", "r", windows_of(None, 100, None), 101, None, 1, 0))
    assert answer == Refused("tokens a minute", NEVER)


def test_settled_usage_replaces_the_reservation() -> None:
    store = MemoryStore()
    windows = windows_of(None, 1_000, None)

    async def go() -> list[object]:
        first = await store.admit("u", "a", windows, 900, None, 1, 0)
        refused = await store.admit("u", "b", windows, 200, None, 1, 1)
        await store.settle("u", "a", windows, 300)  # it used 300 of its 900
        admitted = await store.admit("u", "c", windows, 700, None, 1, 2)
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
