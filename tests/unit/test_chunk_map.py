"""The chunk map's ranges: every chunk in exactly one range, in order, neighbours in one state merged."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from runs.chunk_map import ChunkRange, fold

STATES = ("ingested", "ingesting", "failed", "stopped", "pending")


@given(st.lists(st.sampled_from(STATES), max_size=300))
def test_ranges_cover_every_chunk_once_in_order_and_merge_neighbours(states: list[str]) -> None:
    ranges = fold(states)

    assert [state for r in ranges for state in [r.state] * (r.last - r.first + 1)] == states
    assert all(a.last + 1 == b.first and a.state != b.state for a, b in itertools.pairwise(ranges))


def test_a_run_of_one_state_is_one_range() -> None:
    assert fold(["ingested"] * 20_000) == [ChunkRange(0, 19_999, "ingested")]
