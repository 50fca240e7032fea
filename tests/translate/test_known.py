"""What is kept for texts sent again is found by equality: never given for another text, even
one of the same length and beginning."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kimi_proxy.translate.calibration import _classify, _counts
from kimi_proxy.translate.known import PER_KEY, Known, text_key


@given(st.text(min_size=64, max_size=80), st.text(min_size=1, max_size=16))
def test_a_text_of_the_same_length_and_beginning_is_counted_as_itself(start: str, end: str) -> None:
    first = start + end
    second = start + end[::-1].swapcase()
    assert text_key(first) == text_key(second) or len(first) != len(second)
    assert _counts(first) == _classify(first)
    assert _counts(second) == _classify(second)


def test_entries_are_found_by_equality_and_the_oldest_go_first() -> None:
    known: Known[str, int] = Known(size=2)
    texts = [f"{'x' * 70}{n}" for n in range(PER_KEY + 1)]  # one key, more than it keeps
    for n, text in enumerate(texts):
        known.put(text_key(text), text, n)
    assert known.get(text_key(texts[-1]), "".join(texts[-1])) == PER_KEY  # a new, equal string
    assert known.get(text_key(texts[0]), texts[0]) is None  # pushed out of its key
    for other in ("a" * 80, "b" * 80):  # two more keys: the first key is dropped
        known.put(text_key(other), other, -1)
    assert known.get(text_key(texts[-1]), texts[-1]) is None
