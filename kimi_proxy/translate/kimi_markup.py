"""Kimi K2's own tool-call markup, recovered when a provider passes it on as text.

Kimi K2 writes a tool call as special tokens:

    <|tool_calls_section_begin|><|tool_call_begin|>functions.Bash:0<|tool_call_argument_begin|>
    {"command": "ls"}<|tool_call_end|><|tool_calls_section_end|>

A provider's parser normally turns them into `tool_calls`. Some leave them in the message text
(a self-hosted vLLM or SGLang without the `kimi_k2` parser, some hosts behind OpenRouter), where
Claude Code would show the markup and never run the call. `MarkupScanner` splits such text into
plain text and whole calls. Pure and incremental: it holds back only a tail that may be the start
of a marker, and a call until its end marker (its arguments are checked whole; some parsers
leave them JSON-encoded twice).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

log = logging.getLogger("kimi_proxy.markup")

SECTION_BEGIN = ("<|tool_calls_section_begin|>", "<|tool_call_section_begin|>")
SECTION_END = ("<|tool_calls_section_end|>", "<|tool_call_section_end|>")
CALL_BEGIN = "<|tool_call_begin|>"
ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"
#: What opens markup in plain text (a provider may drop the section marker).
OPENERS = (*SECTION_BEGIN, CALL_BEGIN)
_LONGEST = max(len(m) for m in (*OPENERS, *SECTION_END, ARGUMENT_BEGIN, CALL_END))

TEXT, SECTION, HEADER, ARGUMENTS = range(4)


@dataclass(frozen=True, slots=True)
class MarkupCall:
    """One call read from the markup: the provider-side id, name and arguments (JSON text)."""

    id: str
    name: str
    arguments: str


Piece = str | MarkupCall


def _find_any(text: str, markers: tuple[str, ...]) -> tuple[int, str]:
    """The first of `markers` in `text`: (position, marker), or (-1, "")."""
    found = [(at, m) for m in markers if (at := text.find(m)) >= 0]
    return min(found) if found else (-1, "")


def _partial_tail(text: str, markers: tuple[str, ...]) -> int:
    """Where a tail of `text` that may be the start of one of `markers` begins (len: none)."""
    at = text.find("<", max(0, len(text) - _LONGEST + 1))
    while at >= 0:
        tail = text[at:]
        if any(m.startswith(tail) for m in markers):
            return at
        at = text.find("<", at + 1)
    return len(text)


def _call_from(header: str, arguments: str, serial: int) -> MarkupCall:
    """`functions.NAME:N` (or `NAME:N`, or `NAME`) and the arguments, made a call."""
    header = header.strip()
    bare = header.removeprefix("functions.")
    name, colon, _ = bare.rpartition(":")
    if not colon:
        name = bare
    call_id = header if colon else f"functions.{name}:{serial}"
    log.warning(
        "the provider sent a call to %s as Kimi markup in its text (is its Kimi tool-call "
        "parser off?); recovered it",
        name,
    )
    return MarkupCall(id=call_id, name=name, arguments=_arguments_object(arguments))


def _arguments_object(raw: str) -> str:
    """The arguments as sent, or unwrapped when a parser encoded the JSON object as a string."""
    raw = raw.strip()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if isinstance(value, str):
        try:
            inner = orjson.loads(value)
        except orjson.JSONDecodeError:
            return raw
        if isinstance(inner, dict):
            return value
    return raw


class MarkupScanner:
    """Feed text as it streams; get back text to show and calls to make, in order."""

    __slots__ = ("_buffer", "_collected", "_header", "_serial", "_state", "holding")

    def __init__(self) -> None:
        self._state = TEXT
        self._buffer = ""  # text not yet placed: a possible marker start, or markup in progress
        self._collected: list[str] = []  # a header or arguments read so far (kept in parts)
        self._header = ""
        self._serial = 0
        #: Whether text fed so far is held back (inside markup, or a possible marker start).
        self.holding = False

    def passes(self, text: str) -> bool:
        """Whether `text` goes out as it is: nothing is held, and no marker can start in it
        (every marker starts with "<|"). Nearly every chunk; the caller skips `feed`."""
        return not self.holding and "<|" not in text and text[-1:] != "<"

    def feed(self, text: str) -> list[Piece]:
        if self.passes(text):
            return [text]
        self._buffer += text
        pieces: list[Piece] = []
        while self._step(pieces):
            pass
        self.holding = self._state != TEXT or bool(self._buffer)
        return pieces

    def release(self) -> list[Piece]:
        """Something else came between (a tool call, reasoning): a held tail is text after all;
        markup in progress stays held."""
        if self._state != TEXT or not self._buffer:
            return []
        return self.finish()

    def finish(self) -> list[Piece]:
        """The stream ended: a held tail is text; a call left open is dropped (logged)."""
        rest, self._buffer = self._buffer, ""
        state, self._state = self._state, TEXT
        self.holding = False
        self._collected.clear()
        if state == TEXT:
            return [rest] if rest else []
        if state != SECTION:  # after a whole call, only the section's end marker was missing
            log.warning("the provider's text ended inside a Kimi tool-call markup; dropped it")
        return []

    def _step(self, pieces: list[Piece]) -> bool:
        """Consume what the buffer allows in the current state; False when it must wait."""
        buffer = self._buffer
        if self._state == TEXT:
            at, marker = _find_any(buffer, OPENERS)
            if at < 0:
                keep = _partial_tail(buffer, OPENERS)
                if keep:
                    pieces.append(buffer[:keep])
                self._buffer = buffer[keep:]
                return False
            if at:
                pieces.append(buffer[:at])
            # a bare call marker opens a call at once; a section marker waits for one
            self._state = HEADER if marker == CALL_BEGIN else SECTION
            self._buffer = buffer[at + len(marker) :]
            return True
        if self._state == SECTION:
            stripped = buffer.lstrip()
            if stripped.startswith(CALL_BEGIN):
                self._state, self._buffer = HEADER, stripped[len(CALL_BEGIN) :]
                return True
            for end in SECTION_END:
                if stripped.startswith(end):
                    self._state, self._buffer = TEXT, stripped[len(end) :]
                    return True
            if any(m.startswith(stripped) for m in (CALL_BEGIN, *SECTION_END)):
                self._buffer = stripped
                return False  # a marker still arriving
            # anything else between calls: the section ended without its marker
            self._state = TEXT
            return True
        if self._state == HEADER:
            header = self._take_until(ARGUMENT_BEGIN)
            if header is None:
                return False
            self._header, self._state = header, ARGUMENTS
            return True
        arguments = self._take_until(CALL_END)  # ARGUMENTS
        if arguments is None:
            return False
        pieces.append(_call_from(self._header, arguments, self._serial))
        self._serial += 1
        self._state = SECTION
        return True

    def _take_until(self, marker: str) -> str | None:
        """All text up to `marker` once it has come (the buffer then starts after it), else
        None, keeping only what may be the marker's start in the buffer: each character is
        searched about once, however long a Write's arguments are."""
        buffer = self._buffer
        at = buffer.find(marker)
        if at < 0:
            keep = max(0, len(buffer) - len(marker) + 1)
            self._collected.append(buffer[:keep])
            self._buffer = buffer[keep:]
            return None
        self._collected.append(buffer[:at])
        self._buffer = buffer[at + len(marker) :]
        content = "".join(self._collected)
        self._collected.clear()
        return content


def split_markup(text: str) -> tuple[str, list[MarkupCall]]:
    """A whole message's text: (the text without markup, the calls it held)."""
    scanner = MarkupScanner()
    pieces = [*scanner.feed(text), *scanner.finish()]
    return (
        "".join(p for p in pieces if isinstance(p, str)),
        [p for p in pieces if isinstance(p, MarkupCall)],
    )
