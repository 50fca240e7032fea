"""The streaming translator: OpenAI chat-completion chunks in, Anthropic stream events out.

Theory of operation
-------------------
`StreamTranslator` is a sans-IO state machine, one per stream. The server calls `start()` once
(→ `message_start`), `feed(chunk)` for every decoded upstream chunk (→ zero or more events, ready
to send at once) and `finish()` when the provider ends the stream (→ closing events). Nothing is
buffered that could be sent: every text, reasoning and tool-argument fragment leaves as a delta in
the same `feed` call that received it.

Anthropic allows one open content block at a time, with indexes contiguous from 0; only
`_open_block` and `_close_block` (`blocks.py`) emit `content_block_start` and
`content_block_stop`, so every start has its stop. A change of kind (reasoning → text → tool
call) closes the open block and opens the next. Reasoning becomes a `thinking` block closed with
a `signature_delta` (empty: the proxy does not forge Anthropic signatures).

Tool calls are keyed by the OpenAI `index`. The first call streams live. When a fragment of another
call arrives, the open call is closed only if its arguments are already complete JSON; otherwise
the other call's fragments are held until it can open, which it does as soon as the open call's
arguments are complete. Held calls open in index order, so parallel calls come out in order even
when the provider interleaves their fragments. Chunks with `tool_calls: []` or empty strings emit
nothing.

Text and reasoning pass through `MarkupScanner` (kimi_markup.py): Kimi K2's own tool-call
markup, which some providers leave in the text (or, for a thinking model, in the reasoning),
becomes tool calls keyed apart from the OpenAI indexes. Only what may be markup is held back: a
call until its end marker, and a trailing "<" or "<|…" until the next chunk shows it is not one
(every marker starts with "<|") or something else comes next.

Usage may come on the finish chunk, on a trailing chunk with no choices, or in Groq's
`x_groq.usage`; the latest one wins (never summed). `finish()` reports it in `message_delta`.
A provider `error` object inside the stream raises the mapped `ProxyError`: the server turns it
into an SSE `error` event — never a made-up stop reason. So does a call whose arguments never
close, unless the answer budget ran out (`finish_reason: length`): then, as on Anthropic's API,
the cut-off call stands and the stop reason is `max_tokens` (Claude Code tells the model its
call was cut off; resending the same request would only cut it off again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kimi_proxy.errors import ApiError, error_from_stream_payload

from .agent_history import LocalCall, encode_transcript
from .blocks import UNKNOWN_TOOL, ContentBlocks, Event
from .kimi_markup import MarkupCall, MarkupScanner
from .request import UpstreamRequest
from .response import (
    REASONING_FIELDS,
    anthropic_usage,
    chunk_usage,
    matched_stop_sequence,
    new_message_id,
    stop_reason,
)

log = logging.getLogger("kimi_proxy.stream")

MARKUP_CALL_KEYS = 1 << 20  # keys of calls read from Kimi markup: apart from OpenAI indexes


@dataclass(slots=True)
class StepResult:
    """What one upstream call of an agent-mode turn produced, once it ended."""

    events: list[Event]
    text: str
    local_calls: list[LocalCall]
    client_calls: bool


class StreamTranslator(ContentBlocks):
    """Per-stream state: the open block, the next index, the tool calls by OpenAI index."""

    __slots__ = (
        "_billed_cached",
        "_billed_input",
        "_client_model",
        "_finish_reason",
        "_input_estimate",
        "_last_usage",
        "_markup",
        "_matched_stop",
        "_output_tokens",
        "_reasoning_markup",
        "_step_finished",
        "_step_text",
        "_stop_sequences",
        "_upstream_model",
        "_usage",
        "message_id",
        "step_tokens",
        "web_searches",
    )

    def __init__(
        self,
        upstream: UpstreamRequest,
        *,
        message_id: str | None = None,
        input_tokens: int = 0,
        local_tools: frozenset[str] = frozenset(),
    ) -> None:
        # Only what the reply needs: not the request payload, which can be freed once sent.
        ContentBlocks.__init__(self, upstream.tool_names, local_tools, upstream.structured_tool)
        self._client_model = upstream.client_model
        self._upstream_model = upstream.upstream_model
        self._stop_sequences = upstream.stop_sequences
        self.message_id = message_id or new_message_id()
        self._input_estimate = input_tokens
        self._markup = MarkupScanner()
        self._reasoning_markup = MarkupScanner()  # a thinking model's call may end up there
        self._finish_reason: str | None = None  # of the last upstream call that finished
        self._matched_stop: str | None = None
        self._step_finished = False
        self._usage: dict[str, Any] | None = None
        self._last_usage: dict[str, Any] | None = None
        self._output_tokens = 0
        # What each upstream call of the turn cost (agent mode has several): billed, settled.
        self._billed_input = 0
        self._billed_cached = 0
        self.step_tokens: list[int | None] = []  # per upstream call; None: no usage reported
        self._step_text: list[str] = []
        self.web_searches = 0  # run by the proxy for the `web_search` server tool

    @property
    def has_content(self) -> bool:
        """True once a content block has been started (the client has seen the answer begin)."""
        return self._next_index > 0

    @property
    def finished(self) -> bool:
        """True once the provider has given a finish reason for the current upstream call."""
        return self._step_finished

    def start(self) -> list[Event]:
        return [
            {
                "type": "message_start",
                "message": {
                    "id": self.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self._client_model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": self._input_estimate, "output_tokens": 0},
                },
            }
        ]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if chunk.get("error"):
            raise error_from_stream_payload(chunk, model=self._upstream_model)
        usage = chunk_usage(chunk)
        if usage:
            self._usage = usage
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if len(delta) == 1 and "content" in delta:  # nearly every chunk: text alone
                self._text(delta["content"], events)
            elif delta:
                for name in REASONING_FIELDS:
                    text = delta.get(name)
                    if text:
                        self._scan(text, events, thinking=True)
                        break
                self._text(delta.get("content"), events)
                for fragment in delta.get("tool_calls") or ():
                    self._release_held(events)
                    self._tool_fragment(fragment, events)
            if choice.get("finish_reason"):
                if not self._step_finished:
                    self._matched_stop = None  # a new upstream call: only its own stop counts
                self._step_finished = True
                self._finish_reason = choice["finish_reason"]
                self._matched_stop = (
                    matched_stop_sequence(choice, self._stop_sequences) or self._matched_stop
                )
        return events

    def end_step(self) -> StepResult:
        """End one upstream call: close what is open, send held client calls, and hand back
        the local calls (agent mode) for the proxy to run. The message stays open."""
        events: list[Event] = []
        self._place(self._reasoning_markup.finish(), events, thinking=True)
        self._place(self._markup.finish(), events, thinking=False)
        self._close_block(events)
        while self._open_next_held_call(events, allow_unnamed=True):
            self._close_block(events)
        broken = [
            c.name for c in self._calls.values() if c.block is not None and c.arguments_broken()
        ]
        if broken and self._finish_reason != "length":
            raise ApiError(
                f"The provider sent a call to {broken[0]} whose arguments are not valid JSON "
                "(they never closed); try again."
            )
        if broken:  # as Anthropic does: the cut-off call stands, and stop_reason is max_tokens
            log.warning("the answer budget ran out inside a call to %s", broken[0])
        local_calls = [
            LocalCall(
                id=call.upstream_id or f"call_{self._nonce}_{self._next_index}_{key}",
                name=call.name or UNKNOWN_TOOL,
                arguments="".join(call.held),
            )
            for key, call in sorted(self._calls.items())
            if call.block is None and call.name in self._local
        ]
        result = StepResult(
            events=events,
            text="".join(self._step_text),
            local_calls=local_calls,
            client_calls=self._step_client_calls,
        )
        if self._usage is not None:
            step = anthropic_usage(self._usage)
            self._output_tokens += step["output_tokens"]
            self._billed_input += step["input_tokens"]
            self._billed_cached += step["cache_read_input_tokens"]
            self.step_tokens.append(
                step["input_tokens"] + step["cache_read_input_tokens"] + step["output_tokens"]
            )
            self._last_usage = self._usage
        else:
            self.step_tokens.append(None)
        self._usage = None
        self._calls = {}
        self._step_text = []
        self._step_client_calls = False
        self._step_finished = False
        return result

    def note(self, text: str) -> list[Event]:
        """A text block of the proxy's own (agent-mode progress), complete at once."""
        events: list[Event] = []
        self._close_block(events)
        self._append("text", "text_delta", "text", text, events)
        self._close_block(events)
        return events

    def transcript(self, calls: list[LocalCall]) -> list[Event]:
        """The `redacted_thinking` block that carries a step's local calls and results."""
        if not calls:
            return []
        return self.whole_block({"type": "redacted_thinking", "data": encode_transcript(calls)})

    def billed_usage(self) -> dict[str, int]:
        """What the turn cost, every upstream call of it summed (`message_delta` reports the
        last call's input: the context's size, which is what Claude Code wants to see)."""
        if not any(t is not None for t in self.step_tokens):
            return {"input_tokens": self._input_estimate, "output_tokens": self._output_tokens}
        return {
            "input_tokens": self._billed_input,
            "output_tokens": self._output_tokens,
            "cache_read_input_tokens": self._billed_cached,
        }

    def partial_usage(self) -> dict[str, int]:
        """The usage of a stream the client cancelled: the provider's figures so far when it
        sent any; else the input estimate, and the output relayed (a token per 4 characters)."""
        reported = self._output_tokens + int((self._usage or {}).get("completion_tokens") or 0)
        relayed = -(-self._relayed_chars // 4)
        return self._usage_of(self._usage or self._last_usage, max(reported, relayed))

    def _usage_of(self, reported: dict[str, Any] | None, output_tokens: int) -> dict[str, int]:
        """The provider's usage in Anthropic's terms with `output_tokens`; the input estimate
        when the provider reported none."""
        usage = anthropic_usage(reported)
        usage["output_tokens"] = output_tokens
        if reported is None:
            usage["input_tokens"] = self._input_estimate
        return usage

    def finish(self) -> list[Event]:
        events = self.end_step().events
        reason, sequence = stop_reason(
            self._finish_reason, used_tools=self._used_tools, matched_stop=self._matched_stop
        )
        usage = self._usage_of(self._last_usage, self._output_tokens)
        delta_usage: dict[str, Any] = {
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
        }
        if self.web_searches:
            delta_usage["server_tool_use"] = {"web_search_requests": self.web_searches}
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": delta_usage,
            }
        )
        events.append({"type": "message_stop"})
        return events

    # -- text and reasoning ------------------------------------------------------------

    def _text(self, text: str | None, events: list[Event]) -> None:
        if not text:
            return
        # The hot path: `MarkupScanner.passes` for both scanners, inlined (a call a chunk costs
        # a quarter of the translator's time per chunk).
        held = self._markup.holding or self._reasoning_markup.holding
        if held or "<|" in text or text[-1] == "<":
            self._scan(text, events, thinking=False)
        else:
            self._step_text.append(text)
            self._append("text", "text_delta", "text", text, events)

    def _scan(self, text: str, events: list[Event], *, thinking: bool) -> None:
        """Text or reasoning through its markup scanner; a tail the other one holds goes first."""
        own, other = (
            (self._reasoning_markup, self._markup)
            if thinking
            else (self._markup, self._reasoning_markup)
        )
        if other.holding:
            self._place(other.release(), events, thinking=not thinking)
        if own.passes(text):
            self._emit(text, events, thinking=thinking)
        else:
            self._place(own.feed(text), events, thinking=thinking)

    def _release_held(self, events: list[Event]) -> None:
        """A held "<" is text (or thinking) after all once something else comes next."""
        self._place(self._reasoning_markup.release(), events, thinking=True)
        self._place(self._markup.release(), events, thinking=False)

    def _place(
        self, pieces: list[str | MarkupCall], events: list[Event], *, thinking: bool
    ) -> None:
        """Text the markup scanner let through, and the calls it read, as they come."""
        for piece in pieces:
            if isinstance(piece, MarkupCall):
                fragment = {
                    "index": MARKUP_CALL_KEYS + len(self._calls),
                    "id": piece.id,
                    "function": {"name": piece.name, "arguments": piece.arguments},
                }
                self._tool_fragment(fragment, events)
            elif piece:
                self._emit(piece, events, thinking=thinking)

    def _emit(self, text: str, events: list[Event], *, thinking: bool) -> None:
        if thinking:
            self._append("thinking", "thinking_delta", "thinking", text, events)
        else:
            self._step_text.append(text)
            self._append("text", "text_delta", "text", text, events)
