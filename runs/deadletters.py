"""Event Grid's dead letters: the BlobCreated events it could not deliver to the blob trigger.

Event Grid writes each as a blob in EVENT_GRID_DEADLETTER_CONTAINER holding a JSON array of events in
the Event Grid schema, each with a `subject` of `/blobServices/default/containers/{container}/blobs/{name}`.
"""

from __future__ import annotations

import json
from typing import Any

from core.contract import ChunkRef
from core.errors import ChunkError

_SUBJECT_PREFIX = "/blobServices/default/containers/"


def chunks_in_dead_letter(data: bytes, chunk_container: str) -> list[ChunkRef]:
    """The chunks a dead-letter blob's events name; ValueError when the blob is not a list of events."""
    return sorted({ref for ref, _ in _chunk_events(data, chunk_container)})


def events_of_chunks(data: bytes, chunk_container: str, refs: list[ChunkRef]) -> list[dict[str, Any]]:
    """The blob's events that name one of `refs` (what stays of a dead letter partly redriven)."""
    wanted = set(refs)
    return [event for ref, event in _chunk_events(data, chunk_container) if ref in wanted]


def _chunk_events(data: bytes, chunk_container: str) -> list[tuple[ChunkRef, dict[str, Any]]]:
    try:
        events = json.loads(data)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise ValueError("not a list of Event Grid events")
    prefix = f"{_SUBJECT_PREFIX}{chunk_container}/blobs/"
    found = []
    for event in events:
        subject = event.get("subject")
        if not isinstance(subject, str) or not subject.startswith(prefix):
            continue
        try:
            found.append((ChunkRef.parse(subject.removeprefix(prefix), chunk_container), event))
        except ChunkError:
            continue
    return found
