"""What agent mode leaves in the client's history, and how it is read back. Pure.

Progress lines ("🔄 Starting...", "🤔 Thinking (step N)...", …) travel in text blocks of their
own. They are the proxy's words, not the model's: when the client sends the turn back, those
blocks are removed before the request goes upstream.

The local tool calls of a step, with their results, travel in a `redacted_thinking` block — the
Anthropic API's own opaque block that clients store and send back verbatim without showing it.
Its `data` is `kimi-proxy.local-tools.v1:` + base64url(zlib(JSON)). Reading the history, the
proxy turns each such block back into the assistant `tool_calls` and `tool` messages the model
produced and saw, so the model remembers what it ran — with no state kept in the proxy.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

TRANSCRIPT_PREFIX = "kimi-proxy.local-tools.v1:"

STARTING = "🔄 Starting..."


def thinking_line(step: int) -> str:
    return f"🤔 Thinking (step {step})..."


def executing_line(names: list[str]) -> str:
    return f"🔧 Executing {', '.join(names)}..."


def tool_line(name: str, position: int, total: int) -> str:
    return f"⚙️ {name} ({position}/{total})..."


def limit_line(limit: int) -> str:
    return f"⚠️ Stopped after {limit} model calls (MAX_TOOL_ITERATIONS={limit}); ask me to continue."


_PROGRESS_LINE = re.compile(
    r"^(?:🔄 Starting\.\.\."
    r"|🤔 Thinking \(step \d+\)\.\.\."
    r"|🔧 Executing .+\.\.\."
    r"|⚙️ \S+ \(\d+/\d+\)\.\.\."
    r"|⚠️ Stopped after \d+ model calls \(MAX_TOOL_ITERATIONS=\d+\); ask me to continue\.)$"
)
_PROGRESS_FIRST_CHARS = frozenset("🔄🤔🔧⚙⚠")


def is_progress_text(text: str) -> bool:
    """True for a text block that holds only progress lines."""
    stripped = text.strip()
    if not stripped or stripped[0] not in _PROGRESS_FIRST_CHARS:
        return False
    return all(_PROGRESS_LINE.match(line) for line in stripped.splitlines() if line.strip())


@dataclass(frozen=True, slots=True)
class LocalCall:
    """One tool call the proxy ran itself, and what it returned."""

    id: str
    name: str
    arguments: str
    result: str = ""
    is_error: bool = False


def encode_transcript(calls: list[LocalCall]) -> str:
    data = orjson.dumps(
        {
            "calls": [
                {
                    "id": c.id,
                    "name": c.name,
                    "arguments": c.arguments,
                    "result": c.result,
                    "is_error": c.is_error,
                }
                for c in calls
            ]
        }
    )
    return TRANSCRIPT_PREFIX + base64.urlsafe_b64encode(zlib.compress(data, 6)).decode()


def decode_transcript(data: str) -> list[LocalCall] | None:
    """The calls in one of our blocks; None for any other redacted_thinking data."""
    if not data.startswith(TRANSCRIPT_PREFIX):
        return None
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(data[len(TRANSCRIPT_PREFIX) :]))
        payload: Any = orjson.loads(raw)
        return [
            LocalCall(
                id=str(c["id"]),
                name=str(c["name"]),
                arguments=str(c["arguments"]),
                result=str(c["result"]),
                is_error=bool(c["is_error"]),
            )
            for c in payload["calls"]
        ]
    except (binascii.Error, zlib.error, orjson.JSONDecodeError, KeyError, TypeError):
        return None
