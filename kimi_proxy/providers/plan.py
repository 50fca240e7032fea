"""Which key takes a request: go now, wait for a reset, or refuse — and what a refusal says.
Pure: plain values in.

The caller lists the options in its order of preference (the session's key first, then the
family's candidates in order, the keys of one provider by what they have left), each with its
admission (`budget.KeyLedger.admission`). The first that admits now wins. Otherwise the option
that frees up soonest is waited for when that is within `max_wait`; else the request is refused
with the reason and the time until the soonest reset (a `retry-after`), or, when no option could
ever hold it, as too large.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kimi_proxy.errors import (
    TOKEN_LIMIT_ADVICE,
    BillingError,
    InvalidRequestError,
    ProxyError,
    RateLimitError,
    TokenLimitError,
)

from .budget import Admission, Admit, WaitUntil


@dataclass(frozen=True, slots=True)
class Option:
    ref: int  # the caller's index
    label: str  # "groq key GROQ_API_KEY_2 (moonshotai/kimi-k2.6)": names a key, never shows it
    admission: Admission


@dataclass(frozen=True, slots=True)
class Go:
    ref: int


@dataclass(frozen=True, slots=True)
class Wait:
    ref: int
    until: float


@dataclass(frozen=True, slots=True)
class Refuse:
    message: str
    retry_after: float | None  # None: waiting cannot help (too large for every option)


Choice = Go | Wait | Refuse


def choose(options: Sequence[Option], now: float, max_wait: float) -> Choice:
    """Go with the first option that admits now; else wait for the soonest within `max_wait`;
    else refuse, naming what is exhausted and when it resets."""
    for option in options:
        if isinstance(option.admission, Admit):
            return Go(option.ref)
    waiting = [
        (option.admission.at, option)
        for option in options
        if isinstance(option.admission, WaitUntil)
    ]
    if waiting:
        at, soonest = min(waiting, key=lambda pair: pair[0])
        if at - now <= max_wait:
            return Wait(soonest.ref, at)
        reasons = "; ".join(
            f"{o.label}: {_reason(o.admission)}, resets in {max(0.0, t - now):.0f} s"
            for t, o in sorted(waiting, key=lambda pair: pair[0])
        )
        return Refuse(f"Every provider key is rate-limited: {reasons}.", max(0.0, at - now))
    if not options:
        return Refuse("No provider key can serve this request now.", None)
    reasons = "; ".join(f"{o.label}: {_reason(o.admission)}" for o in options)
    return Refuse(f"This request is larger than any provider key allows: {reasons}.", None)


def _reason(admission: Admission) -> str:
    return "" if isinstance(admission, Admit) else admission.reason


class NoUsableKeyError(BillingError):
    """Every key of every candidate is disabled: nothing to retry until the configuration is
    fixed. A 402, which Claude Code shows at once instead of retrying for minutes."""


def refusal(
    refuse: Refuse,
    *,
    keys_left: bool,
    disabled: str,
    last_error: ProxyError | None,
    gone: Sequence[tuple[str, str | None]],
) -> ProxyError:
    """What the person reads when the plan refuses: `gone` pairs each candidate's label with
    why it was retired (None: still served); `disabled` names the rejected keys."""
    if not keys_left:
        return NoUsableKeyError(
            "No provider key is left: every key was rejected. "
            f"{disabled or 'No key is configured.'} Each refused key is checked again with "
            "the provider every minute or so and serves as soon as it is accepted (a key "
            "topped up or restored at the provider); to change keys (GROQ_API_KEY, "
            "MOONSHOT_API_KEY… or the keys in your config file), restart kimi-proxy."
        )
    if last_error is not None and refuse.retry_after is None:
        return last_error
    if all(why is not None for _, why in gone):
        listed = "; ".join(f"{label}: {why}" for label, why in gone)
        return InvalidRequestError(
            f"No model of this route is served any more ({listed}). Update the candidates "
            "in your config file (docs/CONFIG.md), or run kimi-proxy doctor."
        )
    if refuse.retry_after is None:
        return TokenLimitError(f"{refuse.message} {TOKEN_LIMIT_ADVICE}", limit=0, requested=0)
    said = f" (Provider said: {last_error.message})" if last_error else ""
    # Waiting was weighed and refused (longer than `max_wait_s`): the person reads it now.
    return RateLimitError(refuse.message + said, retry_after=refuse.retry_after, final=True)
