"""What one failed attempt teaches about its key and model. Pure: the failure, the key's ledger
and the clock in; a `Lesson` out, which `Call` applies — cool the key down for the provider's
reset, disable it (401/403), retire the model (gone), leave this target out of the call, back
off — or None when the failure is the client's to see.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from kimi_proxy.errors import (
    AuthenticationError,
    BillingError,
    PermissionDeniedError,
    TokenLimitError,
)
from kimi_proxy.protocol.waits import retry_after
from kimi_proxy.upstream.client import UpstreamFailure

from .budget import KeyLedger

DEFAULT_COOLDOWN = 5.0  # a 429 that names no reset


@dataclass(frozen=True, slots=True)
class Lesson:
    reason: str  # for the log line
    disable: str | None = None  # the key is rejected: why
    retire: str | None = None  # the model is gone: why
    cap_tokens: int | None = None  # the key's real tokens a minute, smaller than thought
    exclude: bool = False  # not this key and model again within this call
    cool_until: float | None = None  # the key rests until then (the provider's 429)
    backoff_until: float | None = None  # this target waits until then (a retryable failure)


def model_gone(failure: UpstreamFailure) -> bool:
    text = failure.body.lower()
    if failure.status == 400:
        return b"model_decommissioned" in text or b"decommissioned" in text
    if failure.status == 404:
        return b"model" in text
    return False


def lesson(
    failure: UpstreamFailure,
    ledger: KeyLedger,
    now: float,
    attempts: int,
    jitter: Callable[[float, float], float] = random.uniform,
) -> Lesson | None:
    """What `failure` (the `attempts`-th attempt) teaches; None: the client's to see."""
    error = failure.error
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        why = f"the provider answered HTTP {failure.status} ({error.message})"
        return Lesson("key rejected", disable=why)
    if model_gone(failure):
        return Lesson("model gone", retire=error.message)
    if isinstance(error, TokenLimitError):
        return Lesson(
            "request over the key's tokens a minute", cap_tokens=error.limit, exclude=True
        )
    if failure.status == 413:  # too large for this provider: another may take it
        return Lesson("request too large", exclude=True)
    if failure.status == 429:
        pause = retry_after(failure.headers)
        if pause is None:
            exhausted = [
                b.resets_at - now
                for b in ledger.windows.values()
                if b.reported and b.remaining == 0 and b.resets_at > now
            ]
            pause = min(exhausted) if exhausted else DEFAULT_COOLDOWN
        return Lesson("rate limited", cool_until=now + pause)
    if isinstance(error, BillingError):  # out of credits: another key may have some
        return Lesson("billing", exclude=True)
    if failure.retryable:
        pause = error.retry_after
        if pause is None:  # exponential backoff with full jitter
            pause = jitter(0, 0.25 * 2 ** min(attempts - 1, 6))
        reason = f"HTTP {failure.status}" if failure.status else "unreachable"
        return Lesson(reason, backoff_until=now + pause)
    if failure.status is None:  # a stall or a broken answer: not this key again now
        return Lesson("timed out", exclude=True)
    return None
