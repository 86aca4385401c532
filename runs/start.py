"""Start a run: its record is claimed and its source chunked until the source's end or the time budget,
when a continuation on the control queue carries it on (docs/http-api.md#start-an-ingestion)."""

from __future__ import annotations

import logging
import time

from chunking.chunker import start_chunking
from chunking.request import IngestionRequest
from core.context import Context
from core.logs import did
from core.run_scope import run_scope
from core.run_store import RunRecord

log = logging.getLogger(__name__)


async def start_run(ctx: Context, request: IngestionRequest, *, budget: float | None) -> tuple[RunRecord, bool]:
    """Starts the run the request asks for, chunking for at most `budget` seconds (None: to the source's
    end); the run's record as it stands, and whether this call created it (a run id asked for again
    answers the run as it is)."""
    started = time.monotonic()
    with run_scope(request.run_id):  # every log line of the run carries its id
        record, created = await start_chunking(ctx, request, budget)
        did(log, "run %s %s: %s, %d chunks, %d items", record.run_id, "started" if created else "asked for again",
            record.state, record.chunks or 0, record.messages or 0, seconds=time.monotonic() - started)  # fmt: skip
    return record, created
