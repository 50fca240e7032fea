"""Which key takes a request: go now, wait for a reset, or refuse. Pure: plain values in.

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
