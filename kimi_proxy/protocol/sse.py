"""Server-sent events: an incremental decoder (WHATWG rules) and the Anthropic event encoder.

The decoder is fed raw bytes in pieces of any size and returns complete events: lines end in
CRLF, LF or CR (also when a CRLF is split across two pieces), `:` lines are comments, several
`data:` lines join with newlines, and an event is dispatched on a blank line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    __slots__ = ("_buffer", "_data", "_dispatched_event", "_event", "_id", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = ""
        self._dispatched_event = "message"
        self._id: str | None = None
        self._skip_lf = False
        self._started = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Complete events in `chunk` (plus what earlier pieces left over)."""
        events: list[ServerSentEvent] = []
        for line in self._lines(chunk):
            data = self._line(line)
            if data is not None:
                text = data.decode("utf-8", "replace")
                events.append(ServerSentEvent(text, self._dispatched_event, self._id))
        return events

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """Only the data of each complete event, as bytes: the provider-stream hot path (no
        event objects, no decoding — `orjson.loads` takes bytes)."""
        if (
            chunk[:6] == b"data: "
            and chunk[-2:] == b"\n\n"
            and not (self._buffer or self._data or self._event or self._skip_lf or b"\r" in chunk)
            and self._started
        ):  # whole events of one data line each (what providers send): split at once
            found = chunk[6:-2].split(b"\n\ndata: ")
            if chunk.count(b"\n") == 2 * len(found):  # no other line anywhere
                self._dispatched_event = "message"
                return found
        found = []
        pending = self._data
        for line in self._lines(chunk):
            if line[:6] == b"data: ":  # the two lines of nearly every event, inline
                pending.append(line[6:])
            elif not line and pending:
                found.append(self._dispatch())
            else:
                data = self._line(line)
                if data is not None:
                    found.append(data)
        return found

    def _lines(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return []  # an empty piece must not forget a CR that ended the previous one
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._started:  # a stream may open with a UTF-8 byte order mark
            if len(buffer) < 3 and b"\xef\xbb\xbf".startswith(buffer):
                self._buffer = buffer
                return []
            self._started = True
            buffer = buffer.removeprefix(b"\xef\xbb\xbf")
        if b"\r" not in buffer:  # fast path: LF-only streams (what providers send)
            *lines, self._buffer = buffer.split(b"\n")
            return lines
        lines = []
        start = 0
        length = len(buffer)
        while start < length:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, next_start = lf, lf + 1
            elif cr + 1 < length:
                end = cr
                next_start = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            else:  # CR at the very end: its LF may come with the next chunk
                end, next_start = cr, cr + 1
                self._skip_lf = True
            lines.append(buffer[start:end])
            start = next_start
        self._buffer = buffer[start:]
        return lines

    def _dispatch(self) -> bytes:
        """End the event being read (a blank line after data): its data."""
        pending = self._data
        data = pending[0] if len(pending) == 1 else b"\n".join(pending)
        self._dispatched_event = self._event or "message"
        pending.clear()
        self._event = ""
        return data

    def _line(self, line: bytes) -> bytes | None:
        """Apply one line; the event's data when the line completes an event."""
        if line[:5] == b"data:":
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            return None
        if not line:
            if not self._data:
                self._event = ""
                return None
            return self._dispatch()
        if line[:1] == b":":
            return None
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._id = value.decode("utf-8", "replace")
        elif name == b"data":  # a bare `data` line: an empty data value
            self._data.append(value)
        return None


_EVENT_PREFIX: dict[str, bytes] = {}


def encode_event(event: dict[str, Any]) -> bytes:
    """One SSE frame: an `event:` line naming the type the data carries (SDKs need both)."""
    kind = event["type"]
    prefix = _EVENT_PREFIX.get(kind)
    if prefix is None:
        prefix = _EVENT_PREFIX[kind] = f"event: {kind}\ndata: ".encode()
    return prefix + orjson.dumps(event) + b"\n\n"


def encode_events(events: list[dict[str, Any]]) -> bytes:
    return b"".join([encode_event(e) for e in events])  # a list joins faster than a generator
