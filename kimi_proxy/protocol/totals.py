"""A session's (or a gateway user's) totals for the day: what the dashboard and the status line
show. Counted by each instance's feed (`web/feed.py`), and with Redis kept for every instance
together (`gateway/shared_view.py`), which reads them back into the same shape."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Today:
    """One session's (or user's) totals for the current day."""

    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    provider: str | None = None
    model: str | None = None
    key: str | None = None
    context_tokens: int = 0  # the input of its last request: how full its context is
    context_window: int = 0
    user: str | None = None  # the gateway user whose requests these are (sessions)
