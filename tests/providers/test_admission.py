"""The admission arithmetic (pure): header dialects, a key's budget, and the choice between
going, waiting and refusing — property-tested."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_proxy.protocol.waits import parse_duration, retry_after
from kimi_proxy.providers.budget import Admit, KeyLedger, Never, Reservation, WaitUntil
from kimi_proxy.providers.catalog import load_catalog
from kimi_proxy.providers.dialects import RESET_MARGIN, Reported, read_limits
from kimi_proxy.providers.plan import Go, Option, Refuse, Wait, choose

CATALOG = load_catalog()


def test_groq_durations_and_headers() -> None:
    assert parse_duration("2m59.56s") == 179.56
    assert parse_duration("7.66s") == 7.66
    assert parse_duration("1h2m3s") == 3723
    assert parse_duration("450ms") == 0.45
    assert parse_duration("12") == 12
    assert parse_duration("soon") is None and parse_duration("5x") is None
    headers = {
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-remaining-requests": "997",
        "x-ratelimit-reset-requests": "4m19.2s",
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "2400",
        "x-ratelimit-reset-tokens": "7.66s",
    }
    requests, tokens = read_limits(CATALOG.dialects["groq"], headers, 100.0, 0.0)
    assert (requests.kind, requests.window, requests.limit, requests.remaining) == (
        "requests",
        "day",
        1000,
        997,
    )
    assert requests.resets_at == 100 + 259.2 + RESET_MARGIN
    assert (tokens.window, tokens.limit, tokens.remaining) == ("minute", 10000, 2400)
    assert tokens.resets_at == 100 + 7.66 + RESET_MARGIN


def test_openrouter_resets_are_epoch_milliseconds() -> None:
    headers = {
        "X-RateLimit-Limit": "20",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1000012000",
    }
    lowered = {k.lower(): v for k, v in headers.items()}
    [requests] = read_limits(CATALOG.dialects["openrouter"], lowered, 50.0, 1_000_000.0)
    assert requests.remaining == 0 and requests.resets_at == 50 + 12 + RESET_MARGIN


def test_retry_after_in_seconds_or_milliseconds() -> None:
    assert retry_after({"retry-after": "3"}) == 3
    assert retry_after({"retry-after-ms": "1500", "retry-after": "3"}) == 1.5
    assert retry_after({}) is None


def test_a_request_larger_than_the_whole_limit_never_goes() -> None:
    ledger = KeyLedger.with_limits([("tokens", "minute", 10_000)], now=0.0)
    assert isinstance(ledger.admission(12_000, 0.0), Never)
    assert isinstance(ledger.admission(9_000, 0.0), Admit)


def test_a_used_up_window_waits_for_its_reset_then_admits() -> None:
    ledger = KeyLedger.with_limits([("tokens", "minute", 10_000)], now=0.0)
    held = ledger.reserve(8_000, 0.0)
    assert isinstance(ledger.admission(5_000, 1.0), WaitUntil)  # held until it ends
    ledger.settle(held, 6_000)
    assert isinstance(ledger.admission(4_000, 2.0), Admit)
    assert isinstance(ledger.admission(5_000, 2.0), WaitUntil)
    assert isinstance(ledger.admission(5_000, 60.0), Admit)


# -- properties ------------------------------------------------------------------------------

LIMIT = 10_000
ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "ack", "settle", "release", "tick"]),
        st.integers(min_value=1, max_value=6_000),
    ),
    max_size=60,
)


def _groq(remaining: int, now: float) -> list[Reported]:
    headers = {
        "x-ratelimit-limit-tokens": str(LIMIT),
        "x-ratelimit-remaining-tokens": str(remaining),
        "x-ratelimit-reset-tokens": "60s",
    }
    return read_limits(CATALOG.dialects["groq"], headers, now, 0.0)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_reservations_never_exceed_what_the_headers_allow_and_all_are_settled(
    steps: list[tuple[str, int]],
) -> None:
    """Between two reports of the provider, what is admitted never exceeds the remaining
    budget it reported; every reservation ends exactly once (acknowledged by a report, then
    settled or released) and leaves nothing held behind."""
    ledger = KeyLedger()
    now = 0.0
    provider_remaining = LIMIT  # what the provider would report now
    ledger.acknowledge(ledger.reserve(0, now), _groq(LIMIT, now))
    unacked: list[tuple[Reservation, int]] = []
    acked: list[Reservation] = []
    reported = LIMIT
    for op, amount in steps:
        if op == "reserve":
            if isinstance(ledger.admission(amount, now), Admit):
                unacked.append((ledger.reserve(amount, now), amount))
                assert sum(n for _, n in unacked) <= reported
        elif op == "ack" and unacked:
            reservation, need = unacked.pop(0)
            provider_remaining = max(0, provider_remaining - need)  # it counted this one
            ledger.acknowledge(reservation, _groq(provider_remaining, now))
            reported = provider_remaining
            acked.append(reservation)
        elif op == "settle" and acked:
            reservation = acked.pop()
            ledger.settle(reservation, amount)
            assert not reservation.open
        elif op == "release" and unacked:
            reservation, _ = unacked.pop()
            ledger.release(reservation)  # the provider never counted it
            assert not reservation.open
        elif op == "tick":
            now += 0.5
        for budget in ledger.windows.values():
            assert budget.reserved >= 0
    for reservation, _ in unacked:
        ledger.settle(reservation, 0)
    for reservation in acked:
        ledger.settle(reservation, 0)
    assert all(b.reserved == 0 for b in ledger.windows.values())
    assert ledger.probing == 0


admissions = st.one_of(
    st.just(Admit()),
    st.builds(WaitUntil, st.floats(min_value=0, max_value=120), st.just("used up")),
    st.builds(Never, st.just("too large")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(admissions, max_size=8), st.floats(min_value=0, max_value=60))
def test_choose_goes_waits_or_refuses_as_the_admissions_say(
    found: list[object], max_wait: float
) -> None:
    options = [Option(i, f"key {i}", a) for i, a in enumerate(found)]  # type: ignore[arg-type]
    choice = choose(options, 0.0, max_wait)
    first_admit = next((o.ref for o in options if isinstance(o.admission, Admit)), None)
    waits = [o.admission.at for o in options if isinstance(o.admission, WaitUntil)]
    if first_admit is not None:
        assert choice == Go(first_admit)
    elif waits and min(waits) <= max_wait:
        assert isinstance(choice, Wait) and choice.until == min(waits)
    else:
        assert isinstance(choice, Refuse)
        if waits:
            assert choice.retry_after == min(waits) and "resets in" in choice.message
        else:
            assert choice.retry_after is None
