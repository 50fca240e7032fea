"""Results kept for what a client sends again and again, found by equality rather than by hash.

Claude Code sends the same system prompt, tool definitions and history with every request,
each time as new string objects: a hash cache (`functools.lru_cache`) hashes all of them anew,
~1.5 GB/s, ~25 µs for its 50 KB first request. Here an entry is found by a cheap key (a length
and the first characters) and then compared whole, at memory speed (a few µs for the same
text), so a value can never be given for a different text.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

W = TypeVar("W")  # what is compared whole
V = TypeVar("V")

PER_KEY = 4  # texts of one length and beginning kept at once (a session's growing messages)


class Known(Generic[W, V]):
    """At most `size` keys, the oldest dropped first; each holds up to `PER_KEY` entries.
    Safe to use from the large-body thread and the event loop at once (`put` holds a lock)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[Hashable, list[tuple[W, V]]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, whole: W) -> V | None:
        """Without the lock: a `put` meanwhile in another thread can only make this miss (the
        entry is compared whole), never give another text's value."""
        for known, value in self._entries.get(key, ()):
            if known == whole:
                return value
        return None

    def put(self, key: Hashable, whole: W, value: V) -> None:
        with self._lock:
            entries = self._entries.get(key)
            if entries is None:
                if len(self._entries) >= self._size:
                    del self._entries[next(iter(self._entries))]
                entries = self._entries[key] = []
            entries.insert(0, (whole, value))
            del entries[PER_KEY:]


def text_key(text: str | bytes) -> tuple[int, str | bytes]:
    """A text's length and beginning: cheap to hash, and few texts share both."""
    return len(text), text[:64]
