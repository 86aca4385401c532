"""A run's chunks by state, as ranges of indexes: what the dashboard's grid draws (docs/http-api.md#chunk-map).

One listing of the run's chunk statuses (their metadata: a list call per 5,000 chunks, no blob read), folded
as it pages into at most MAX_CELLS cells of `chunks_per_cell` neighbouring chunks, each in the worst state of
its chunks (SEVERITY), then into ranges of neighbouring cells in one state. A chunk without a status was never
started (`pending`). Ranges cover 0 to the last chunk known, in order, without gaps or overlaps; `counts` is
exact whatever the cells. Memory and the answer's size are bounded by MAX_CELLS, not by the run's chunks.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from core.context import Context
from runs.status import checked_run_id, no_run

PENDING = "pending"  # a chunk whose invocation never started
SEVERITY = ("ingested", PENDING, "stopped", "ingesting", "failed")  # a cell shows its worst chunk's state
MAX_CELLS = 2000


@dataclass(frozen=True)
class ChunkRange:
    first: int
    last: int
    state: str


@dataclass(frozen=True)
class ChunkMap:
    run_id: str
    total: int | None  # the run's chunk count; None while it is chunking
    chunks_per_cell: int  # 1: each range is exact; more: a range's state is the worst of its chunks'
    counts: dict[str, int]  # chunks by state, exact
    ranges: list[ChunkRange]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Cells:
    """Chunk states folded into at most `max_cells` cells of `per` neighbouring chunks, each holding its worst
    chunk's state (SEVERITY): memory bounded by `max_cells` whatever the indexes added; counts exact."""

    total: int | None
    max_cells: int = MAX_CELLS
    worst: dict[int, tuple[int, int]] = field(default_factory=dict)  # by cell: its worst state's rank, statuses
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.last = (self.total or 0) - 1
        self.per = max(1, math.ceil((self.total or 0) / self.max_cells))

    def add(self, index: int, state: str) -> None:
        """Chunk `index` is in `state` (each index added once)."""
        self.counts[state] += 1
        self.last = max(self.last, index)
        while self.last // self.per >= self.max_cells:  # more chunks than the cells hold: cells twice as wide
            self.per, halved = self.per * 2, self.worst
            self.worst = {}
            for cell, (rank, filled) in halved.items():
                self._put(cell // 2, rank, filled)
        self._put(index // self.per, SEVERITY.index(state), 1)

    def _put(self, cell: int, rank: int, filled: int) -> None:
        was_rank, was_filled = self.worst.get(cell, (0, 0))
        self.worst[cell] = max(was_rank, rank), was_filled + filled

    def chunk_map(self, run_id: str) -> ChunkMap:
        """Chunks 0 to the last known as ranges of neighbouring cells in one state; never started: `pending`."""
        known = self.last + 1
        counts = {**self.counts, PENDING: known - sum(self.counts.values())}
        pending = SEVERITY.index(PENDING)
        ranges: list[ChunkRange] = []
        for cell in range(math.ceil(known / self.per)):
            first, last = cell * self.per, min(cell * self.per + self.per, known)
            rank, filled = self.worst.get(cell, (pending, 0))
            state = SEVERITY[rank if filled == last - first else max(rank, pending)]  # a chunk without one: pending
            if ranges and ranges[-1].state == state:
                first = ranges.pop().first
            ranges.append(ChunkRange(first, last - 1, state))
        return ChunkMap(run_id, self.total, self.per, {state: counts[state] for state in SEVERITY if counts.get(state)},
                        ranges)  # fmt: skip


async def chunk_map(ctx: Context, run_id: str) -> ChunkMap:
    """The run's chunks as ranges by state; `RunNotFoundError` for a run that does not exist."""
    record = await ctx.runs.get(checked_run_id(run_id))
    if record is None:
        raise no_run(run_id)
    cells = Cells(record.chunks)
    async for status in ctx.runs.listed_chunk_statuses(run_id):
        cells.add(status.index, status.state)
    return cells.chunk_map(run_id)
