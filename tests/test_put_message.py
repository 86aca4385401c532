"""The lean Put Message sender writes what the SDK writes: read back through the SDK, byte for byte."""

from __future__ import annotations

import base64
import secrets
import time

import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from core.context import app_context
from core.errors import QueueSendError
from ingestion.target import partition_of, target_sender

TEXTS = ["plain-id-0001", "<xml> & 'quotes' \"double\"", "ünïcödé ✓ 🚀", "line\u2028sep\u0085", "x" * 40_000, " "]


def sdk_queue(connection_string: str, name: str, encoding: str) -> QueueClient:
    policy = TextBase64EncodePolicy() if encoding == "base64" else None
    queue = QueueClient.from_connection_string(connection_string, name, message_encode_policy=policy)
    queue.create_queue()
    return queue


def raw_messages(queue: QueueClient) -> list[tuple[str, str]]:
    """(content as stored, expiry) for every message, read back without any decoding."""
    received = queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=3600)
    return [(message.content, message.expires_on.year) for message in received]


@pytest.mark.parametrize(("encoding", "ttl"), [("base64", None), ("none", "-1"), ("base64", "3600")])
def test_lean_sender_stores_the_same_bytes_as_the_sdk(on_loop, azurite, app_env, monkeypatch, encoding, ttl):
    monkeypatch.setenv("QUEUE_MESSAGE_ENCODING", encoding)
    if ttl:
        monkeypatch.setenv("QUEUE_MESSAGE_TTL", ttl)
    sdk = sdk_queue(azurite.connection_string, f"sdk-{secrets.token_hex(4)}", encoding)
    for text in TEXTS:
        sdk.send_message(text, time_to_live=int(ttl) if ttl else None)

    async def send_lean() -> None:
        send = await target_sender(await app_context())
        for text in TEXTS:
            await send(text)

    on_loop(send_lean())
    lean = QueueClient.from_connection_string(azurite.connection_string, app_env["QUEUE_NAME"])

    assert raw_messages(lean) == raw_messages(sdk)


def test_partitions_route_each_id_to_one_stable_queue(on_loop, azurite, app_env, monkeypatch):
    monkeypatch.setenv("QUEUE_PARTITIONS", "3")
    ids = [f"id-{n}" for n in range(60)]

    async def send_all() -> None:
        send = await target_sender(await app_context())
        for text in ids:
            await send(text)

    on_loop(send_all())
    for partition in range(3):
        name = f"{app_env['QUEUE_NAME']}-{partition}"
        stored = sorted(base64.b64decode(content).decode() for content, _ in raw_messages(sdk_queue_of(azurite, name)))
        assert stored == sorted(text for text in ids if partition_of(text, 3) == partition)
        assert stored  # 60 IDs over 3 partitions: none is empty


def test_a_status_that_retrying_cannot_fix_is_raised_with_the_answer(on_loop, app_env, monkeypatch):
    monkeypatch.setenv("QUEUE_MESSAGE_ENCODING", "none")

    async def send_too_large() -> None:
        send = await target_sender(await app_context())
        await send("x" * 70_000)

    with pytest.raises(QueueSendError, match=r"answered 413 RequestBodyTooLarge: The request body is too large"):
        on_loop(send_too_large())


def sdk_queue_of(azurite, name: str) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, name)


def test_a_visibility_timeout_hides_new_messages_until_it_passes(on_loop, azurite, app_env, monkeypatch):
    monkeypatch.setenv("QUEUE_MESSAGE_VISIBILITY_TIMEOUT", "2")

    async def send_three() -> None:
        send = await target_sender(await app_context())
        for text in ("a", "b", "c"):
            await send(text)

    on_loop(send_three())
    queue = QueueClient.from_connection_string(azurite.connection_string, app_env["QUEUE_NAME"])
    assert queue.get_queue_properties().approximate_message_count == 3
    assert raw_messages(queue) == []  # stored, not yet visible
    time.sleep(2.5)
    assert sorted(base64.b64decode(content).decode() for content, _ in raw_messages(queue)) == ["a", "b", "c"]
