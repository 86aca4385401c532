"""Real `func.HttpRequest` / blob objects, shaped as the host hands them to the app's functions."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

BASE = "http://localhost:7071/api"


def post_ingestion(body: dict[str, Any] | bytes | None = None) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    return func.HttpRequest(
        "POST", f"{BASE}/ingestions?code=key", headers={"Content-Type": "application/json"}, body=raw
    )


def get_status(run_id: str) -> func.HttpRequest:
    return func.HttpRequest("GET", f"{BASE}/ingestions/{run_id}", route_params={"run_id": run_id}, body=b"")


def chunk_blob(container: str, name: str, data: bytes) -> func.InputStream:
    return func.blob.InputStream(data=data, name=f"{container}/{name}", length=len(data))


def body_of(response: func.HttpResponse) -> dict[str, Any]:
    return json.loads(response.get_body())


def ingest_every_chunk(run: Any, functions: dict[str, Any], probe: Any, run_id: str) -> list[str]:
    names = probe.chunk_names(run_id)
    for name in names:
        data = probe.chunks.download_blob(name).readall()
        run(functions["ingest_chunk"](chunk_blob("chunks", name, data)))
    return names
