"""A translated payload as the bytes sent to the provider.

Its tool definitions are most of it (30 of Claude Code's 48 KB) and are the same objects request
after request (`tools.definitions` hands out shared ones), so their JSON is made once and put in
whole (`orjson.Fragment`): encoding Claude Code's payload takes ~6 µs instead of ~11. The counts
of tokens read the same bytes (`calibration.measure`).
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

KEPT = 64  # tool lists (of distinct definition objects) kept at once

_TOOLS: dict[tuple[int, ...], tuple[list[Any], bytes]] = {}
_ADDING = threading.Lock()  # the large-body thread encodes too (`calibration.measure`)


def tools_json(tools: list[Any]) -> bytes:
    """`orjson.dumps(tools)`, kept for a list of the same definition objects: known by their
    identities, kept alive with the entry so that an identity is never reused while it is in.
    The definitions are never changed once made (they are shared)."""
    key = tuple(map(id, tools))
    known = _TOOLS.get(key)
    if known is not None:
        return known[1]
    encoded = orjson.dumps(tools)
    with _ADDING:
        if len(_TOOLS) >= KEPT:
            del _TOOLS[next(iter(_TOOLS))]
        _TOOLS[key] = (list(tools), encoded)
    return encoded


def payload_json(payload: dict[str, Any]) -> bytes:
    """`orjson.dumps(payload)`, byte for byte, its tools' JSON put in as made before."""
    tools = payload.get("tools")
    if not tools:
        return orjson.dumps(payload)
    return orjson.dumps({**payload, "tools": orjson.Fragment(tools_json(tools))})
