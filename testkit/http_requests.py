"""Real `func.HttpRequest` / blob objects, shaped as the host hands them to the app's functions."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import azure.functions as func
from azure.storage.queue import QueueClient

from fanout.serve import blob_input as chunk_blob

BASE = "http://localhost:7071/api"


def post_ingestion(body: dict[str, Any] | bytes | None = None) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    return func.HttpRequest(
        "POST", f"{BASE}/ingestions?code=key", headers={"Content-Type": "application/json"}, body=raw
    )


def get_status(run_id: str) -> func.HttpRequest:
    return func.HttpRequest("GET", f"{BASE}/ingestions/{run_id}", route_params={"run_id": run_id}, body=b"")


def post_redrive(run_id: str) -> func.HttpRequest:
    return func.HttpRequest("POST", f"{BASE}/ingestions/{run_id}/redrive", route_params={"run_id": run_id}, body=b"")


def post_cancel(run_id: str) -> func.HttpRequest:
    return func.HttpRequest("POST", f"{BASE}/ingestions/{run_id}/cancel", route_params={"run_id": run_id}, body=b"")


def delete_request(run_id: str) -> func.HttpRequest:
    return func.HttpRequest("DELETE", f"{BASE}/ingestions/{run_id}", route_params={"run_id": run_id}, body=b"")


def get_list(**params: str) -> func.HttpRequest:
    """`GET /api/ingestions?…`, with the function key in the query as the host passes it on."""
    return func.HttpRequest("GET", f"{BASE}/ingestions", params={"code": "key", **params}, body=b"")


def run_queued(on_loop: Any, function: Any, queue: QueueClient, times: int = 1) -> int:
    """Hands each message waiting in `queue` to a queue-triggered function, as the host does (`times`
    over: delivery is at least once), then deletes it; returns how many there were."""
    handled = 0
    while messages := list(queue.receive_messages(max_messages=1)):
        for _ in range(times):
            on_loop(function(func.QueueMessage(body=messages[0].content.encode())))
        queue.delete_message(messages[0])
        handled += 1
    return handled


def body_of(response: func.HttpResponse) -> dict[str, Any]:
    return json.loads(response.get_body())


def ingest_every_chunk(on_loop: Any, functions: dict[str, Any], probe: Any, run_id: str) -> list[str]:
    names = probe.chunk_names(run_id)
    for name in names:
        download = probe.chunks.download_blob(name)
        on_loop(functions["ingest_chunk"](chunk_blob("chunks", name, download.readall(), download.properties.metadata)))
    return names


def status_of(on_loop: Callable[[Any], Any], functions: dict[str, Any], run_id: str) -> dict[str, Any]:
    """A run's status as the app's status route answers it."""
    return body_of(on_loop(functions["get_ingestion_status"](get_status(run_id))))
