"""Messages over the queue's 64 KiB limit (after encoding): claim check, or reject the chunk."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

from azure.storage.blob.aio import ContainerClient

from core.contract import SERVICE_DEFAULT_TTL, TTL_METADATA, ChunkRef
from core.delivery import MAX_MESSAGE_BYTES, base64_size
from core.errors import ChunkError
from core.settings import LargeMessageMode, MessageEncoding


def encoded_size(text: str, encoding: MessageEncoding) -> int:
    if encoding == "base64":
        return base64_size(len(text.encode("utf-8")))
    return len(escape(text).encode("utf-8"))


Room = Mapping[MessageEncoding, int]  # the bytes an item may take, encoded, under each encoding it is measured by


def oversized(messages: Sequence[str], room: Room) -> list[int]:
    """Positions of the texts that would take more than their room under one of `room`'s encodings; short ones
    are not even measured (a character takes at most 6: 4 UTF-8 bytes and base64's third, or `&amp;`)."""
    always_fits = min(room.values()) // 6
    return [
        position
        for position, text in enumerate(messages)
        if len(text) > always_fits and any(encoded_size(text, encoding) > most for encoding, most in room.items())
    ]


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def check_xml_safe(messages: Sequence[str]) -> None:
    """Plain-text (unencoded) messages travel inside XML, which cannot carry control characters."""
    for position, text in enumerate(messages):
        if _NOT_XML.search(text):
            raise ChunkError(
                f"line {position + 1}: message holds a control character XML cannot carry; "
                "send it with QUEUE_MESSAGE_ENCODING=base64"
            )


async def fit_messages(
    messages: list[str],
    ref: ChunkRef,
    *,
    encoding: MessageEncoding,
    mode: LargeMessageMode,
    store: ContainerClient,
    ttl: int | None,
    room: Room | None = None,
    payloads: Sequence[str] | None = None,
) -> list[str]:
    """The messages to send: one over its room (default: the queue's limit under `encoding`; for a shaped run,
    that limit less what the shape adds, under both encodings, so that its messages and their `seq` are the
    same whatever the encoding when it is resumed) becomes a reference to a blob in `store` holding its payload
    (`payloads[i]`, default the message itself: the item's text whatever the run's shape), which keeps `ttl`
    (the messages' time-to-live; None: the service's default) for a purge to go by."""
    if encoding == "none":
        check_xml_safe(messages)
    room = room or {encoding: MAX_MESSAGE_BYTES}
    positions = oversized(messages, room)
    if not positions:
        return messages
    if mode == "reject":
        first = positions[0]
        way = max(room, key=lambda way: encoded_size(messages[first], way) - room[way])
        shaped = (
            ""
            if room[way] == MAX_MESSAGE_BYTES
            else f" with the {MAX_MESSAGE_BYTES - room[way]} bytes of the run's message shape"
        )
        raise ChunkError(
            f"line {first + 1}: message is {encoded_size(messages[first], way)} bytes after {way} encoding, over "
            f"the queue's {MAX_MESSAGE_BYTES}-byte limit{shaped} (LARGE_MESSAGE_MODE=reject; set claim-check to "
            "store it as a blob)"
        )
    container = store.container_name
    lifetime = SERVICE_DEFAULT_TTL if ttl is None else ttl
    fitted = list(messages)
    for position in positions:
        name = ref.claim_check_blob(position)
        payload = (messages if payloads is None else payloads)[position].encode("utf-8")
        await store.upload_blob(name, payload, overwrite=True, metadata={TTL_METADATA: str(lifetime)})
        fitted[position] = json.dumps({"claim_check": {"container": container, "blob": name, "bytes": len(payload)}})
    return fitted
