"""A stand-in for a provider's tokenizer (no Kimi tokenizer is installable offline): BPE-like
pieces — up to five letters, up to three digits, a run of spaces, one or two Chinese
characters, one symbol — and three tokens of framing per message. Deterministic, and shaped
differently from the proxy's estimate, so a calibration has something to learn."""

from __future__ import annotations

import json
import re
from typing import Any

_PIECE = re.compile(r"[A-Za-z]{1,5}|\d{1,3}| +|\s|[\u4e00-\u9fff]{1,2}|[^\sA-Za-z\d\u4e00-\u9fff]")


def count_text(text: str) -> int:
    return len(_PIECE.findall(text))


def count_prompt(payload: dict[str, Any]) -> int:
    tokens = 0
    for message in payload.get("messages", ()):
        tokens += 3
        content = message.get("content")
        if isinstance(content, str):
            tokens += count_text(content)
        for part in content if isinstance(content, list) else ():
            tokens += count_text(part.get("text") or "") if part.get("type") == "text" else 1600
        for call in message.get("tool_calls") or ():
            tokens += count_text(call["function"]["name"] + call["function"]["arguments"])
    if payload.get("tools"):
        tokens += count_text(json.dumps(payload["tools"]))
    return tokens


def quarter_chars(payload: dict[str, Any]) -> int:
    """How a provider that counts a token per 4 characters (and 4 per message, 1,600 per
    image) counts a chat payload: the scripted rate-limited providers count this way."""
    chars = 0
    tokens = 0
    for message in payload.get("messages", ()):
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        else:
            for part in content or ():
                if part.get("type") == "text":
                    chars += len(part.get("text") or "")
                else:
                    tokens += 1600
        tokens += 4
        for call in message.get("tool_calls") or ():
            chars += len(call["function"]["name"]) + len(call["function"]["arguments"])
    if payload.get("tools"):
        chars += len(json.dumps(payload["tools"], separators=(",", ":")))
    return tokens + -(-chars // 4)
