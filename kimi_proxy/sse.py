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
    __slots__ = ("_buffer", "_data", "_event", "_id", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if not chunk:
            return []  # an empty piece must not forget a CR that ended the previous one
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[ServerSentEvent] = []
        if b"\r" not in buffer:  # fast path: LF-only streams (what providers send)
            *lines, self._buffer = buffer.split(b"\n")
            for line in lines:
                event = self._line(line.decode("utf-8", "replace"))
                if event is not None:
                    events.append(event)
            return events
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
            event = self._line(buffer[start:end].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = next_start
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerSentEvent("\n".join(self._data), self._event or "message", self._id)
            self._data = []
            self._event = ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
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
    return b"".join(encode_event(e) for e in events)
