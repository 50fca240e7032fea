"""What a failed attempt teaches (`providers.lessons.lesson`): a pure function of the failure,
the key's ledger and the clock."""

from __future__ import annotations

import httpx
from hypothesis import given
from hypothesis import strategies as st

from kimi_proxy.errors import ApiError, error_from_provider_response
from kimi_proxy.providers.budget import KeyLedger
from kimi_proxy.providers.lessons import DEFAULT_COOLDOWN, lesson
from kimi_proxy.upstream.client import UpstreamFailure

NOW = 1000.0


def failure(
    status: int, body: bytes = b"{}", headers: dict[str, str] | None = None
) -> UpstreamFailure:
    plain = headers or {}
    error = error_from_provider_response(status, body, httpx.Headers(plain), model="m")
    return UpstreamFailure(error, retryable=status >= 500, status=status, headers=plain, body=body)


def test_a_rejected_key_is_disabled_and_says_why() -> None:
    taught = lesson(failure(401, b'{"error": {"message": "bad key"}}'), KeyLedger(), NOW, 1)
    assert taught is not None and taught.disable is not None
    assert "HTTP 401" in taught.disable and "bad key" in taught.disable


def test_a_decommissioned_model_is_retired() -> None:
    body = b'{"error": {"message": "model_decommissioned"}}'
    taught = lesson(failure(400, body), KeyLedger(), NOW, 1)
    assert taught is not None and taught.retire is not None and taught.disable is None


@given(st.floats(min_value=0, max_value=3600, allow_nan=False))
def test_a_429_rests_the_key_as_long_as_the_provider_says(seconds: float) -> None:
    taught = lesson(failure(429, headers={"retry-after": str(seconds)}), KeyLedger(), NOW, 1)
    assert taught is not None and taught.cool_until is not None
    assert abs(taught.cool_until - (NOW + seconds)) < 1e-6


def test_a_429_that_names_no_reset_rests_the_key_a_default_while() -> None:
    taught = lesson(failure(429), KeyLedger(), NOW, 1)
    assert taught is not None and taught.cool_until == NOW + DEFAULT_COOLDOWN


@given(st.integers(min_value=1, max_value=50), st.floats(min_value=0, max_value=1))
def test_a_retryable_failure_backs_off_within_the_jittered_bound(attempts: int, u: float) -> None:
    bound = 0.25 * 2 ** min(attempts - 1, 6)
    taught = lesson(failure(503), KeyLedger(), NOW, attempts, jitter=lambda lo, hi: lo + u * hi)
    assert taught is not None and taught.backoff_until is not None
    assert NOW <= taught.backoff_until <= NOW + bound
    assert taught.disable is None and not taught.exclude


def test_a_stall_leaves_the_target_out_of_this_call() -> None:
    stalled = UpstreamFailure(ApiError("stalled"), retryable=False)
    taught = lesson(stalled, KeyLedger(), NOW, 1)
    assert taught is not None and taught.exclude and taught.cool_until is None


def test_a_bad_request_is_the_clients_to_see() -> None:
    assert lesson(failure(400, b'{"error": {"message": "bad field"}}'), KeyLedger(), NOW, 1) is None
