"""Rate-limit headers → what the provider says is left, per limit. Pure: no I/O, no clock.

Each provider writes its limits in its own dialect (`catalog.toml`): Groq's
`x-ratelimit-remaining-tokens: 7600` with `x-ratelimit-reset-tokens: 2m59.56s`, OpenRouter's
`X-RateLimit-Reset` as epoch milliseconds, Together's as seconds. `read_limits` turns any of
them into `Reported` values with the reset as a time on the caller's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kimi_proxy.protocol.waits import parse_duration

from .catalog import Dialect, HeaderNames, ResetFormat, Window

WINDOW_SECONDS: dict[Window, float] = {"minute": 60.0, "day": 86_400.0}
#: Resets are written to the hundredth of a second (Groq: `7.66s`) and the provider's clock
#: started before ours read the header: a key counts as reset this long after the time named.
RESET_MARGIN = 0.1


@dataclass(frozen=True, slots=True)
class Reported:
    """One limit as the provider reported it: `remaining` of `limit` until `resets_at`."""

    kind: str  # "requests" or "tokens"
    window: Window
    limit: int | None
    remaining: int
    resets_at: float


def reset_seconds(value: str, fmt: ResetFormat, wall_now: float) -> float | None:
    """Seconds until the reset the header names, or None when it cannot be read."""
    if fmt == "duration":
        return parse_duration(value)
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if fmt == "epoch_ms":
        return max(0.0, number / 1000.0 - wall_now)
    return max(0.0, number)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(float(value.strip())))
    except ValueError:
        return None


def _read_one(
    kind: str,
    names: HeaderNames,
    fmt: ResetFormat,
    headers: Mapping[str, str],
    now: float,
    wall_now: float,
) -> Reported | None:
    remaining = _int(headers.get(names.remaining))
    if remaining is None:
        return None
    reset = headers.get(names.reset)
    seconds = reset_seconds(reset, fmt, wall_now) if reset is not None else None
    if seconds is None:
        seconds = WINDOW_SECONDS[names.window]  # no reset told: assume a whole window
    limit = _int(headers.get(names.limit))
    return Reported(kind, names.window, limit, remaining, now + seconds + RESET_MARGIN)


def read_limits(
    dialect: Dialect, headers: Mapping[str, str], now: float, wall_now: float
) -> list[Reported]:
    """Every limit the headers report, in the dialect's terms (`headers` case-insensitive)."""
    found = []
    for kind, names in (("requests", dialect.requests), ("tokens", dialect.tokens)):
        if names is not None:
            reported = _read_one(kind, names, dialect.reset_format, headers, now, wall_now)
            if reported is not None:
                found.append(reported)
    return found
