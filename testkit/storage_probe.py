"""Looks at what really landed in Azurite, with the synchronous SDK (independent of the app's clients)."""

from __future__ import annotations

import contextlib
import os

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy


class StorageProbe:
    def __init__(self, connection_string: str, queue_name: str, chunk_container: str = "chunks") -> None:
        self.connection_string = connection_string
        self.queue = self.queue_client(queue_name)
        self.chunks = BlobServiceClient.from_connection_string(connection_string).get_container_client(chunk_container)

    def queue_client(self, name: str) -> QueueClient:
        """Any queue of the account, its base64 messages decoded."""
        return QueueClient.from_connection_string(
            self.connection_string, name, message_decode_policy=TextBase64DecodePolicy()
        )

    def queue_length(self) -> int:
        try:
            return self.queue.get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            return 0  # not created yet: nothing was sent

    def drain(self) -> list[str]:
        """Every message body in the queue, decoded; each is received once (hidden for an hour)."""
        bodies: list[str] = []
        try:
            self.queue.get_queue_properties()
        except ResourceNotFoundError:
            return bodies  # nothing was ever sent
        while True:
            batch = list(self.queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=3600))
            if not batch:
                return bodies
            bodies.extend(message.content for message in batch)

    def consume(self, most: int | None = None) -> list[str]:
        """A consumer's turn: up to `most` message bodies (None: all there are) received and deleted, the backlog
        shrinking by them; none from a queue not created yet."""
        if most is None:
            taken: list[str] = []
            while batch := self.consume(32):
                taken += batch
            return taken
        try:
            batch = list(self.queue.receive_messages(max_messages=most, visibility_timeout=60))
        except ResourceNotFoundError:
            return []  # nothing was ever sent
        for message in batch:
            self.queue.delete_message(message)
        return [message.content for message in batch]

    def chunk_names(self, run_id: str) -> list[str]:
        try:
            return sorted(blob.name for blob in self.chunks.list_blobs(name_starts_with=f"{run_id}/"))
        except ResourceNotFoundError:
            return []  # the container is not created yet: nothing was written


def delete_queues(connection_string: str, prefixes: list[str]) -> None:
    """Deletes every queue of the account whose name starts with one of `prefixes` (a target queue's
    partitions too); one already gone is fine."""
    service = QueueServiceClient.from_connection_string(connection_string)
    for prefix in prefixes:
        for queue in service.list_queues(name_starts_with=prefix):
            with contextlib.suppress(ResourceNotFoundError):
                service.delete_queue(queue.name)


def set_app_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, str]:
    """Exactly these storage and source settings (none left over from the shell), plus the rest of `env`."""
    for key in [key for key in os.environ if key.startswith(("AzureWebJobsStorage", "SOURCE_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
