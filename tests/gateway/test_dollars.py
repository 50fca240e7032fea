"""Dollar budgets, the pure rule: a request is admitted against its worst-case cost, settled
to its real cost; a day's budget is the UTC day's, a month's the calendar month's."""

from __future__ import annotations

from datetime import UTC, datetime

from kimi_proxy.gateway.store import MemoryStore, Settlement
from kimi_proxy.gateway.window import MICRO, Admitted, Claim, Refused, period_end, windows_of

DEC_6 = int(datetime(2026, 12, 6, 15, 0, tzinfo=UTC).timestamp() * 1000)
DEC_7 = int(datetime(2026, 12, 7, 0, 0, 1, tzinfo=UTC).timestamp() * 1000)


def claim(wall_ms: int, worst_usd: float) -> Claim:
    windows = windows_of(None, None, None, daily_usd=1.0, monthly_usd=1.6, wall_ms=wall_ms)
    return Claim("user:ann", windows, 100, None, round(worst_usd * MICRO))


async def test_admitted_on_the_worst_case_settled_to_the_real_cost_and_new_each_day() -> None:
    store = MemoryStore(clock=lambda: 1_000)
    assert isinstance(await store.admit("r1", (claim(DEC_6, 0.6),), 1), Admitted)
    refused = await store.admit("r2", (claim(DEC_6, 0.6),), 1)  # 0.6 + 0.6 > $1 a day
    assert isinstance(refused, Refused) and refused.limit == "dollars on 2026-12-06"
    assert refused.used == 600_000
    await store.settle_many([Settlement("r1", (claim(DEC_6, 0.6),), 100, used_usd=50_000)])
    assert isinstance(await store.admit("r3", (claim(DEC_6, 0.6),), 1), Admitted)  # 0.05 spent
    assert isinstance(await store.admit("r4", (claim(DEC_7, 0.9),), 1), Admitted)  # a new day
    month = await store.admit("r5", (claim(DEC_7, 0.08),), 1)  # 1.55 + 0.08 > $1.60
    assert isinstance(month, Refused) and month.limit == "dollars in 2026-12"


def test_a_budget_resets_at_utc_midnight_or_on_the_first() -> None:
    assert period_end("dollars on 2026-12-06", DEC_6) == datetime(2026, 12, 7, tzinfo=UTC)
    assert period_end("dollars in 2026-12", DEC_6) == datetime(2027, 1, 1, tzinfo=UTC)
