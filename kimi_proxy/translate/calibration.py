"""Token counts that match the provider's: an estimate per model, calibrated by what the
provider reports it counted. Pure: no I/O (the server keeps the calibrations and saves them).

A prompt is measured as a few counts (`features`): ASCII letters and digits, ASCII punctuation,
ASCII whitespace, three-byte UTF-8 characters (Chinese, Japanese, Korean), other non-ASCII
characters, and messages. Each model's tokens are a weighted sum of them. The weights start
from a prior (English at ~4.5 characters a token, a CJK character ~0.7 of a token, punctuation
~0.5: JSON and code cost more than prose), and every answer's `prompt_tokens` updates them by
recursive least squares: the prompt just counted is then estimated exactly, a prompt of the same
kind closely, and kinds not seen yet keep the prior. Counting runs in C (`bytes.translate`), a
few tens of microseconds for Claude Code's 50 KB request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .encoding import tools_json
from .known import Known, text_key

TOKENS_PER_IMAGE = 1600
FEATURES = ("alnum", "punct", "space", "cjk", "other", "messages")
PRIOR = (0.22, 0.55, 0.08, 0.7, 0.5, 4.0)
#: How far each weight may move on the first report (a variance per weight, in tokens² per
#: count²): wide enough that one report fits, narrow enough that its kind does not rewrite
#: the others.
PRIOR_VARIANCE = (0.01, 0.05, 0.01, 0.2, 0.1, 4.0)
MESSAGE_BOUND = 16  # the most tokens a message's framing (role, separators) takes
NOISE = 1.0  # the variance of a report (the provider's count is exact; keeps updates stable)


def _byte_classes() -> bytes:
    """Each byte → its class: a(lnum), s(pace), p(unct), c (first byte of a three-byte
    character: CJK), o (first byte of another non-ASCII character), k (a continuation byte)."""
    table = bytearray(b"p" * 256)
    for b in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        table[b] = ord("a")
    for b in b" \t\r\n\x0b\x0c":
        table[b] = ord("s")
    for b in range(0x80, 0xC0):
        table[b] = ord("k")
    for b in range(0xC0, 0x100):
        table[b] = ord("c") if 0xE0 <= b < 0xF0 else ord("o")
    return bytes(table)


_CLASSES = _byte_classes()


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt's counts, and its images (a flat price each, outside the calibration)."""

    counts: tuple[float, ...]
    images: int = 0


def measure(payload: dict[str, Any]) -> Prompt:
    """The counts of an OpenAI chat payload's messages, tool calls and tool definitions."""
    texts: list[str] = []  # every text: a byte's class does not depend on its neighbours
    images = 0
    messages = payload.get("messages", ())
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            for part in content or ():
                if part.get("type") == "text":
                    texts.append(part.get("text") or "")
                else:
                    images += 1
        for call in message.get("tool_calls") or ():
            texts.append(call["function"]["arguments"])
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str):
            texts.append(reasoning)
    totals = [0, 0, 0, 0, 0]
    counted = [_counts(text) for text in texts if len(text) >= CACHED_FROM]
    short = "".join([text for text in texts if len(text) < CACHED_FROM])
    counted.append(_classify(short))  # the short ones at once: one pass in C, not one each
    tools = payload.get("tools")
    if tools:
        counted.append(_tool_counts(tools))
    for counts in counted:
        for index, count in enumerate(counts):
            totals[index] += count
    return Prompt((*totals, len(messages)), images)


def _tool_counts(tools: list[Any]) -> tuple[int, int, int, int, int]:
    """The counts of a tool list's JSON, as sent (`encoding.tools_json`: made once a list)."""
    return _counts(tools_json(tools))


#: Texts this long are counted once: Claude Code sends the same system prompt, tool definitions
#: and history with every request, so only what is new is counted again.
CACHED_FROM = 512


def _classify(text: str | bytes) -> tuple[int, int, int, int, int]:
    raw = text.encode() if isinstance(text, str) else text
    classes = raw.translate(_CLASSES)  # one pass in C; counting a class is another
    alnum, space = classes.count(b"a"), classes.count(b"s")
    if raw.isascii():
        return alnum, len(raw) - alnum - space, space, 0, 0
    cjk, other = classes.count(b"c"), classes.count(b"o")
    punct = classes.count(b"p")
    return alnum, punct, space, cjk, other


def bound(prompt: Prompt) -> int:
    """The most tokens `prompt` can be, however its text is crafted: a byte-level BPE (Kimi's,
    GPT's, Qwen's) never makes more tokens than the text has UTF-8 bytes, and a message's
    framing takes a few; images at their flat price."""
    alnum, punct, space, cjk, other, messages = prompt.counts
    text = alnum + punct + space + 3 * cjk + 4 * other  # "other": two- or four-byte characters
    return round(text + MESSAGE_BOUND * messages) + prompt.images * TOKENS_PER_IMAGE


_KNOWN_COUNTS: Known[str | bytes, tuple[int, int, int, int, int]] = Known(1024)


def _counts(text: str | bytes) -> tuple[int, int, int, int, int]:
    """`_classify`, kept for texts seen before (`known.py`: found by equality, not hash)."""
    key = text_key(text)
    counts = _KNOWN_COUNTS.get(key, text)
    if counts is None:
        counts = _classify(text)
        _KNOWN_COUNTS.put(key, text, counts)
    return counts


@dataclass(slots=True)
class Calibration:
    """One model's weights and their covariance (recursive least squares)."""

    weights: list[float] = field(default_factory=lambda: list(PRIOR))
    covariance: list[list[float]] = field(
        default_factory=lambda: [
            [PRIOR_VARIANCE[i] if i == j else 0.0 for j in range(len(PRIOR))]
            for i in range(len(PRIOR))
        ]
    )
    reports: int = 0

    def estimate(self, prompt: Prompt) -> int:
        tokens = sum(w * x for w, x in zip(self.weights, prompt.counts, strict=True))
        return max(1, round(tokens)) + prompt.images * TOKENS_PER_IMAGE

    def learn(self, prompt: Prompt, reported: int) -> None:
        """The provider counted `reported` tokens for `prompt`."""
        target = reported - prompt.images * TOKENS_PER_IMAGE
        x = prompt.counts
        if target <= 0 or not any(x):
            return
        p = self.covariance
        px = [sum(p[i][j] * x[j] for j in range(len(x))) for i in range(len(x))]
        gain_denominator = NOISE + sum(x[i] * px[i] for i in range(len(x)))
        gain = [v / gain_denominator for v in px]
        error = target - sum(w * v for w, v in zip(self.weights, x, strict=True))
        self.weights = [w + g * error for w, g in zip(self.weights, gain, strict=True)]
        self.covariance = [
            [p[i][j] - gain[i] * px[j] for j in range(len(x))] for i in range(len(x))
        ]
        self.reports += 1

    def as_json(self) -> dict[str, Any]:
        return {"weights": self.weights, "covariance": self.covariance, "reports": self.reports}

    @classmethod
    def from_json(cls, data: Any) -> Calibration:
        """A saved calibration; the prior when `data` is not one (an old or damaged file)."""
        try:
            weights = [float(w) for w in data["weights"]]
            covariance = [[float(v) for v in row] for row in data["covariance"]]
            if len(weights) != len(PRIOR) or any(len(r) != len(PRIOR) for r in covariance):
                return cls()
            return cls(weights, covariance, int(data.get("reports", 0)))
        except (KeyError, TypeError, ValueError):
            return cls()
