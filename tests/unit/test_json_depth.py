"""SOURCE_MAX_DEPTH: the nesting guard agrees with a plain JSON scanner however an answer is cut into reads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chunking.json_depth import NestingGuard
from core.errors import SourceError

tricky_text = st.text(alphabet='[]{}"\\ab\n\u00e9\U0001f600', max_size=12)
documents = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=20,
)


def deepest(data: bytes) -> int:
    """The nesting depth, byte by byte: the reference the guard must agree with."""
    depth = peak = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte in b"[{":
            depth += 1
            peak = max(peak, depth)
        elif byte in b"]}":
            depth -= 1
    return peak


def guard_refuses(data: bytes, cuts: list[int], limit: int) -> bool:
    guard = NestingGuard(limit, "too deep")
    points = sorted({min(cut, len(data)) for cut in cuts})
    try:
        for start, end in zip([0, *points], [*points, len(data)], strict=True):
            guard.feed(data[start:end])
    except SourceError:
        return True
    return False


@given(documents, st.lists(st.integers(min_value=0, max_value=400), max_size=12), st.integers(1, 6), st.booleans())
def test_the_guard_refuses_exactly_the_answers_nested_too_deep(document, cuts, limit, ascii_only):
    data = json.dumps(document, ensure_ascii=ascii_only).encode()

    assert guard_refuses(data, cuts, limit) == (deepest(data) > limit)


@pytest.mark.parametrize("depth", [64, 65, 20_000])
def test_nested_arrays_are_refused_past_the_limit(depth):
    data = b"[" * depth + b"]" * depth

    assert guard_refuses(data, list(range(0, len(data), 4096)), 64) == (depth > 64)
