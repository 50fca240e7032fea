"""How much structure a JSON body has, counted piece by piece as it arrives: the commas and
opening brackets outside its strings. Parsing and validating a body costs the event loop time
in proportion to its values, not its bytes (32 MB of one-character messages stall it for
seconds; 32 MB of one image's base64 for milliseconds), so this count, not the size, is what
bounds a body before it is parsed (`KIMI_MAX_BODY_VALUES`).

Each piece is scanned once, in C (`re`, `bytes.find`, `bytes.count`); a string cut between two
pieces is followed across them without scanning any byte twice.
"""

from __future__ import annotations

import re

#: A string from its opening quote: through its closing quote (group 1), or on to the end of
#: the piece, where a lone backslash (group 2) escapes the next piece's first byte. Unrolled, so
#: a long string is scanned in runs; it never fails, so no quote is scanned twice.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:(")|(\\?)\Z)', re.DOTALL)
#: The rest of a string the last piece ended inside of: the same, without the opening quote.
_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*(?:(")|(\\?)\Z)', re.DOTALL)


class StructureCounter:
    """Feed a JSON text in pieces; `count` is its commas, `{` and `[` outside strings.

    Up to `rough_until`, `count` is only an upper bound (those bytes anywhere, ~30 µs for 55 KB
    against ~200 µs for the exact scan): a body that small in structure needs no more. Past it,
    the pieces so far are scanned once and `count` is exact from then on."""

    __slots__ = ("_escaped", "_in_string", "_waiting", "count", "rough_until")

    def __init__(self, rough_until: int = 0) -> None:
        self.count = 0
        self.rough_until = rough_until
        self._waiting: list[bytes] | None = [] if rough_until > 0 else None  # not scanned yet
        self._in_string = False  # the last piece ended inside a string
        self._escaped = False  # ... right after a backslash: the next byte is escaped

    def feed(self, piece: bytes) -> int:
        """Count `piece`; returns the count so far (an upper bound while it is rough)."""
        if self._waiting is None:
            return self._scan(piece)
        self._waiting.append(piece)
        self.count += len(piece) - len(piece.translate(None, b",{["))  # one pass in C
        if self.count <= self.rough_until:
            return self.count
        waiting, self._waiting, self.count = self._waiting, None, 0
        for earlier in waiting:
            self._scan(earlier)
        return self.count

    def _scan(self, piece: bytes) -> int:
        if not piece:
            return self.count
        start = 0
        if self._in_string:
            rest = _REST.match(piece, 1 if self._escaped else 0)
            assert rest is not None  # the pattern matches anything
            if not self._ends_string(rest):
                return self.count
            start = rest.end()
        parts = _STRING.split(piece[start:] if start else piece)
        if len(parts) > 1:  # [outside, closing quote, backslash, outside, ...]
            self._in_string = parts[-3] is None
            self._escaped = parts[-2] == b"\\"
        outside = b"".join(parts[::3])
        self.count += outside.count(b",") + outside.count(b"{") + outside.count(b"[")
        return self.count

    def _ends_string(self, rest: re.Match[bytes]) -> bool:
        self._in_string = rest.group(1) is None
        self._escaped = rest.group(2) == b"\\"
        return not self._in_string
