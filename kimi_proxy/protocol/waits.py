"""How long a provider asks us to wait, as it writes it: `retry-after` (seconds),
`retry-after-ms`, and the Go-style durations of rate-limit resets (`2m59.56s`, `450ms`). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (`2m59.56s`, `7.66s`, `1h2m`, `450ms`) or a bare number."""
    text = text.strip()
    try:
        return max(0.0, float(text[:-1] if text[-1:] == "s" and text[-2:-1].isdigit() else text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """`retry-after` in seconds (`retry-after-ms` too), or None."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    return parse_duration(value)
