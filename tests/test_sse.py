"""SSE codec: the incremental WHATWG decoder and the Anthropic event encoder."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_proxy.protocol.sse import ServerSentEvent, SSEDecoder, encode_event, encode_events


def decode(*pieces: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events


def datas(*pieces: bytes) -> list[str]:
    return [e.data for e in decode(*pieces)]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(eol: bytes) -> None:
    raw = eol.join([b"data: one", b"", b"data: two", b"data: lines", b"", b""])
    assert datas(raw) == ["one", "two\nlines"]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_byte_at_a_time(eol: bytes) -> None:
    raw = eol.join([b"event: ping", b"data: {}", b"", b"data: a", b"data: b", b"", b""])
    assert decode(*(raw[i : i + 1] for i in range(len(raw)))) == [
        ServerSentEvent("{}", "ping"),
        ServerSentEvent("a\nb"),
    ]


def test_crlf_split_across_feeds_is_one_line_ending() -> None:
    # were the LF read as a second line ending, "one" would be dispatched on its own
    assert datas(b"data: one\r", b"\ndata: two\r", b"\n\r", b"\n") == ["one\ntwo"]


def test_crlf_split_with_an_empty_feed_between() -> None:
    assert datas(b"data: one\r", b"", b"\ndata: two\r\n\r\n") == ["one\ntwo"]


def test_cr_at_end_then_other_line() -> None:
    assert datas(b"data: one\r", b"data: two\r\r") == ["one\ntwo"]


def test_comments_are_ignored() -> None:
    assert decode(b": keep-alive\n\n:\ndata: x\n: inside\n\n") == [ServerSentEvent("x")]


def test_event_names() -> None:
    events = decode(b'event: message_start\ndata: {"a":1}\n\ndata: plain\n\n')
    assert events == [ServerSentEvent('{"a":1}', "message_start"), ServerSentEvent("plain")]


def test_event_name_without_data_is_reset() -> None:
    assert decode(b"event: lonely\n\ndata: x\n\n") == [ServerSentEvent("x", "message")]


def test_done_passes_through_as_data() -> None:
    assert datas(b'data: {"x": 1}\n\ndata: [DONE]\n\n') == ['{"x": 1}', "[DONE]"]


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data:no-space", "no-space"),
        (b"data:  two-spaces", " two-spaces"),
        (b"data", ""),
        (b"data:", ""),
    ],
)
def test_field_value_rules(line: bytes, data: str) -> None:
    assert datas(line + b"\n\n") == [data]


def test_unknown_fields_ignored_and_id_kept() -> None:
    events = decode(b"retry: 10\nfoo: bar\nid: 7\ndata: x\n\n")
    assert events == [ServerSentEvent("x", "message", "7")]


def test_incomplete_event_is_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: partial") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("partial")]


def test_utf8_split_inside_a_character() -> None:
    raw = 'data: {"text": "héllo 👋"}\n\n'.encode()
    cut = raw.index("👋".encode()) + 2
    assert datas(raw[:cut], raw[cut:]) == ['{"text": "héllo 👋"}']


EVENTS = [
    {"type": "message_start", "message": {"id": "msg_1", "content": []}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "line\nbreak ünïcode"},
    },
    {"type": "ping"},
    {"type": "message_stop"},
    {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e["type"])
def test_every_frame_names_its_type(event: dict[str, object]) -> None:
    frame = encode_event(event)
    assert frame.endswith(b"\n\n")
    lines = frame.decode().split("\n")
    assert lines[0] == f"event: {event['type']}"
    assert lines[1].startswith("data: ")
    assert json.loads(lines[1][len("data: ") :]) == event
    assert lines[2:] == ["", ""]  # one data line: no raw newline inside the JSON


def test_encoder_round_trips_through_decoder() -> None:
    decoded = decode(encode_events(EVENTS))
    assert [e.event for e in decoded] == [e["type"] for e in EVENTS]
    assert [json.loads(e.data) for e in decoded] == EVENTS


def test_leading_byte_order_mark_is_ignored_even_split() -> None:
    decoder = SSEDecoder()
    pieces = [b"\xef", b"\xbb", b"\xbfdata: {}\n", b"\n"]
    events = [e for piece in pieces for e in decoder.feed(piece)]
    assert [e.data for e in events] == ["{}"]


_LINES = st.sampled_from(
    [b"data: {}", b"data:x", b"data", b"data:  two spaces", b"event: e", b"id: 7", b": note", b""]
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(_LINES, max_size=20),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_data_fast_path_equals_full_decoding(
    lines: list[bytes], eol: bytes, cuts: list[int]
) -> None:
    """`feed_data` (the provider hot path) yields exactly the data of the events `feed` decodes,
    whatever the fields, line endings and network pieces."""
    raw = eol.join([*lines, b"", b""])
    bounds = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    pieces = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    fast = SSEDecoder()
    found = [data for piece in pieces for data in fast.feed_data(piece)]
    assert [d.decode() for d in found] == datas(*pieces)


_FRAMES = st.sampled_from(
    [
        b'data: {"a":1}\n\n',
        b"data: \n\n",
        b"data: x\ndata: y\n\n",
        b"data:z\n\n",
        b": c\n\n",
        b"event: e\ndata: 1\n\n",
        b"id: 3\ndata: 2\n\n",
        b"data: 3\n\n\n",
        b"data: [DONE]\n\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.lists(_FRAMES, min_size=1, max_size=5), max_size=8))
def test_event_aligned_pieces_decode_like_any_others(pieces: list[list[bytes]]) -> None:
    """Reads that end on event boundaries (the usual case, decoded in one split) give what
    full decoding gives, whatever mix of fields they hold."""
    raw = [b"".join(frames) for frames in pieces]
    fast = SSEDecoder()
    found = [data for piece in raw for data in fast.feed_data(piece)]
    assert [d.decode() for d in found] == datas(*raw)
