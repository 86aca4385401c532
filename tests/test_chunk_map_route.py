"""`GET /api/ingestions/{run_id}/chunks` on Azurite: past 2,000 chunks the map keeps to 2,000 cells with
exact counts, and a chunk status whose metadata names another chunk than its blob is refused by name, not
drawn as a chunk that does not exist."""

from __future__ import annotations

import azure.functions as func

from core.context import app_context
from core.contract import ChunkRef
from core.run_store import ChunkStatus, RunRecord, utc_now
from testkit.http_requests import BASE, body_of, status_of


def _chunks(run_id: str) -> func.HttpRequest:
    return func.HttpRequest("GET", f"{BASE}/ingestions/{run_id}/chunks", route_params={"run_id": run_id}, body=b"")


def test_a_large_runs_map_keeps_to_its_cells_with_exact_counts(on_loop, functions, probe):
    ctx = on_loop(app_context())
    record = RunRecord("big-map", "default", 10, created_at=utc_now())
    on_loop(ctx.runs.save(record.chunked(chunks=4_001, messages=40_010), if_match=on_loop(ctx.runs.create(record))))
    for index, state in ((0, "ingested"), (1, "ingested"), (2_400, "failed"), (4_000, "ingesting")):
        status = ChunkStatus(index=index, state=state, sent=0, count=10, updated_at=utc_now())
        on_loop(ctx.runs.put_chunk_status(ChunkRef("big-map", index), status, expected=None))

    answer = on_loop(functions["get_ingestion_chunks"](_chunks("big-map")))
    made = body_of(answer)

    assert answer.status_code == 200 and made["chunks_per_cell"] == 3 and len(made["ranges"]) <= 2_000
    assert made["counts"] == {"ingested": 2, "pending": 3_997, "ingesting": 1, "failed": 1}
    assert made["ranges"][0] == {"first": 0, "last": 2_399, "state": "pending"}  # chunk 2 never started
    assert {"first": 2_400, "last": 2_402, "state": "failed"} in made["ranges"]
    assert made["ranges"][-1] == {"first": 3_999, "last": 4_000, "state": "ingesting"}


def test_a_status_naming_another_chunk_than_its_blob_is_refused_by_name(on_loop, functions, probe):
    ctx = on_loop(app_context())
    record = RunRecord("stray-map", "default", 10, created_at=utc_now())
    on_loop(ctx.runs.save(record.chunked(chunks=2, messages=20), if_match=on_loop(ctx.runs.create(record))))
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    stray = {"index": "999999999999", "state": "ingested", "sent": "10", "count": "10"}
    on_loop(runs.upload_blob("stray-map/chunks/000001", b"", metadata=stray))

    answer = on_loop(functions["get_ingestion_chunks"](_chunks("stray-map")))

    assert answer.status_code == 500 and answer.mimetype == "application/problem+json"
    assert "stray-map/chunks/000001 names chunk 999999999999" in body_of(answer)["detail"]


def test_a_status_under_a_look_alike_name_counts_no_chunk_twice(on_loop, functions, probe):
    ctx = on_loop(app_context())
    record = RunRecord("twin-name", "default", 10, created_at=utc_now())
    on_loop(ctx.runs.save(record.chunked(chunks=3, messages=30), if_match=on_loop(ctx.runs.create(record))))
    for index in (0, 1):
        status = ChunkStatus(index=index, state="ingested", sent=10, count=10, updated_at=utc_now())
        on_loop(ctx.runs.put_chunk_status(ChunkRef("twin-name", index), status, expected=None))
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    twin = {"index": "1", "state": "ingested", "sent": "10", "count": "10"}
    on_loop(runs.upload_blob("twin-name/chunks/0000001", b"", metadata=twin))  # chunk 1's, under a second name

    made = body_of(on_loop(functions["get_ingestion_chunks"](_chunks("twin-name"))))
    status = status_of(on_loop, functions, "twin-name")

    assert made["counts"] == {"ingested": 2, "pending": 1}
    assert status["state"] != "completed" and status["chunks"]["ingested"] == 2, status
