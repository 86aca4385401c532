"""The chunk map, for any chunks in any states (Hypothesis): its ranges cover every chunk once, in order,
neighbours in one state merged; exact cell by cell up to MAX_CELLS chunks, past it each range in its worst
chunk's state; counts exact; never more cells than MAX_CELLS kept, whatever the indexes (a stray huge one)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from runs.chunk_map import PENDING, SEVERITY, Cells

STATES = ("ingested", "ingesting", "failed", "stopped")
MAX = 16  # cells, small so that a few chunks already overflow them


@given(st.dictionaries(st.integers(0, 200), st.sampled_from(STATES), max_size=80), st.none() | st.integers(0, 200),
       st.integers(0, 10**12))  # fmt: skip
def test_the_map_covers_every_chunk_once_in_its_worst_state(statuses, total, stray):
    if total is not None:
        statuses = {index: state for index, state in statuses.items() if index < total}
    cells = Cells(total, max_cells=MAX)
    for index, state in statuses.items():
        cells.add(index, state)
        assert len(cells.worst) <= MAX
    made = cells.chunk_map("r")

    known = max([total or 0, *(index + 1 for index in statuses)])
    states = [statuses.get(index, PENDING) for index in range(known)]
    assert [r.first for r in made.ranges][:1] == ([0] if known else []) and (
        made.ranges[-1].last if made.ranges else -1
    ) == known - 1
    assert all(a.last + 1 == b.first and a.state != b.state for a, b in itertools.pairwise(made.ranges))
    assert len(made.ranges) <= MAX and made.counts == {s: states.count(s) for s in SEVERITY if states.count(s)}
    for r in made.ranges:
        inside = states[r.first : r.last + 1]
        assert r.state == max(inside, key=SEVERITY.index)
        if made.chunks_per_cell == 1:
            assert set(inside) == {r.state}
    if known <= MAX:
        assert made.chunks_per_cell == 1

    cells.add(stray + known, "failed")  # a stray status far past the rest: still at most MAX cells
    assert len(cells.worst) <= MAX and len(cells.chunk_map("r").ranges) <= MAX


def test_a_run_of_one_state_is_one_range() -> None:
    cells = Cells(20_000)
    for index in range(20_000):
        cells.add(index, "ingested")
    made = cells.chunk_map("r")
    assert [(r.first, r.last, r.state) for r in made.ranges] == [(0, 19_999, "ingested")]
    assert made.chunks_per_cell == 10 and made.counts == {"ingested": 20_000}
