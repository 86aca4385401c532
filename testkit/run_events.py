"""Reads the completion events a test's runs sent (RUN_EVENTS_QUEUE), each received once."""

from __future__ import annotations

import json
from typing import Any

from testkit.storage_probe import StorageProbe


def events_of(probe: StorageProbe, env: dict[str, str]) -> list[dict[str, Any]]:
    """The events waiting on the test's events queue, decoded from base64 JSON, oldest first; received for good."""
    queue = probe.queue_client(env["RUN_EVENTS_QUEUE"])
    events = []
    while batch := list(queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=3600)):
        events.extend(json.loads(message.content) for message in batch)
    return events
