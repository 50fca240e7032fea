"""The structure of a JSON body, counted piece by piece as it arrives, is exactly its commas and
opening brackets outside strings, however it is cut."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_proxy.server.json_structure import StructureCounter

# Strings full of what could fool a scanner: quotes, backslashes, commas and brackets.
tricky_text = st.text(alphabet=st.sampled_from(list('ab"\\,{[]}:\n é中')), max_size=12)
documents = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | tricky_text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(tricky_text, inner, max_size=5),
    max_leaves=30,
)


def structure(value: Any) -> int:
    """From the parsed value: a container's opening bracket and the commas between its items."""
    if isinstance(value, list):
        return 1 + max(len(value) - 1, 0) + sum(structure(v) for v in value)
    if isinstance(value, dict):
        return 1 + max(len(value) - 1, 0) + sum(structure(v) for v in value.values())
    return 0


@settings(max_examples=400, deadline=None)
@given(
    documents,
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    st.booleans(),
    st.integers(0, 40),
)
def test_the_count_is_exact_however_the_body_is_cut(
    document: Any, cuts: list[int], indent: bool, rough_until: int
) -> None:
    """Exact once past `rough_until`; below it, an upper bound that never hides a body past it."""
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2 if indent else 0)
    counter = StructureCounter(rough_until)
    start = 0
    for cut in sorted(c % (len(text) + 1) for c in cuts):
        counter.feed(text[start:cut])
        start = cut
    count, exact = counter.feed(text[start:]), structure(document)
    assert exact * 3 <= len(text) * 2  # why a body of under 1.5 × the limit is never counted
    if count > rough_until:
        assert count == exact
    else:
        assert exact <= count


def test_a_cut_between_a_backslash_and_the_quote_it_escapes() -> None:
    text = b'["a\\"b,c", {"k": "\\\\"}, 1]'
    for cut in range(len(text) + 1):
        counter = StructureCounter()
        counter.feed(text[:cut])
        assert counter.feed(text[cut:]) == 4, cut
