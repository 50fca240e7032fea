"""Token estimates without a network call.

No offline tokenizer for Kimi K2 ships on PyPI (its tiktoken vocabulary is downloaded at run
time), so counts are a documented estimate: one token per 4 characters of text and tool JSON,
4 tokens of framing per message, and a flat 1,600 tokens per image. It is used for
`count_tokens`, for `message_start.usage.input_tokens` (the provider's exact count follows in
`message_delta`), and as a fallback in context-length errors.
"""

from __future__ import annotations

from typing import Any

import orjson

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 1600


def _content_chars(content: Any) -> tuple[int, int]:
    """(characters of text, number of images) in an OpenAI message content."""
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    for part in content or ():
        if part.get("type") == "text":
            chars += len(part.get("text") or "")
        else:
            images += 1
    return chars, images


def estimate_tokens(payload: dict[str, Any]) -> int:
    """Estimated prompt tokens of an OpenAI chat payload (messages and tools)."""
    chars = 0
    tokens = 0
    for message in payload.get("messages", ()):
        text_chars, images = _content_chars(message.get("content"))
        chars += text_chars
        tokens += TOKENS_PER_MESSAGE + images * TOKENS_PER_IMAGE
        for call in message.get("tool_calls") or ():
            chars += len(call["function"]["name"]) + len(call["function"]["arguments"])
    if payload.get("tools"):
        chars += len(orjson.dumps(payload["tools"]))
    return tokens + -(-chars // CHARS_PER_TOKEN)
