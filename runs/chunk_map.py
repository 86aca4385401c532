"""A run's chunks by state, as ranges of indexes: what the dashboard's grid draws (docs/http-api.md#chunk-map).

One listing of the run's chunk statuses (their metadata: a list call per 5,000 chunks, no blob read), folded
into runs of neighbouring chunks in one state. A chunk without a status was never started (`pending`).
Ranges cover 0 to the last chunk known, in order, without gaps or overlaps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.context import Context
from runs.status import checked_run_id, no_run

PENDING = "pending"  # a chunk whose invocation never started


@dataclass(frozen=True)
class ChunkRange:
    first: int
    last: int
    state: str


@dataclass(frozen=True)
class ChunkMap:
    run_id: str
    total: int | None  # the run's chunk count; None while it is chunking
    ranges: list[ChunkRange]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fold(states: list[str]) -> list[ChunkRange]:
    """Neighbouring chunks in one state as one range: `states[i]` is chunk i's."""
    ranges: list[ChunkRange] = []
    for index, state in enumerate(states):
        if ranges and ranges[-1].state == state:
            ranges[-1] = ChunkRange(ranges[-1].first, index, state)
        else:
            ranges.append(ChunkRange(index, index, state))
    return ranges


async def chunk_map(ctx: Context, run_id: str) -> ChunkMap:
    """The run's chunks as ranges by state; `RunNotFoundError` for a run that does not exist."""
    record = await ctx.runs.get(checked_run_id(run_id))
    if record is None:
        raise no_run(run_id)
    statuses = await ctx.runs.chunk_statuses(run_id, with_errors=False)
    known = max([record.chunks or 0] + [status.index + 1 for status in statuses])
    states = [PENDING] * known
    for status in statuses:
        states[status.index] = status.state
    return ChunkMap(run_id, record.chunks, fold(states))
