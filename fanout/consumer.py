"""The demo's downstream: drains the target queues as a real consumer would (receive, record the ID,
delete), so Azurite never holds more than a window of messages, and checks what arrived without
trusting the sender: every message body is decoded back to the demo ID's index and counted.

It speaks raw HTTP on the lean sender's connection pool (Get Messages, 32 at a time, then one Delete
Message each): through the SDK a receive and a delete cost ~1-2 ms of CPU each, as much as Azurite.
Local tooling only: it signs with a SAS from an account key (a connection string).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

from azure.storage.queue import QueueSasPermissions, generate_queue_sas
from azure.storage.queue.aio import QueueClient

from core.delivery import Delivery
from core.errors import FanoutError
from core.retry import Attempts, RetryPolicy
from fanout.demo_api import demo_index
from fanout.messages import unpack
from putmessage.connection_pool import ConnectionPool
from putmessage.http_response import ProtocolError
from putmessage.sender import RETRYABLE_STATUS

BATCH = 32  # the most Get Messages returns
HIDDEN_SECONDS = 600  # a received message that is never deleted comes back after this (and counts twice)
_IDLE_POLL = 0.1
_RETRY = RetryPolicy(attempts=8, base_delay=0.5, max_delay=10.0)
_MESSAGE = re.compile(
    rb"<MessageId>([^<]+)</MessageId>.*?<PopReceipt>([^<]+)</PopReceipt>.*?<MessageText>([^<]*)<", re.DOTALL
)


@dataclass
class Tally:
    """What the consumers received, by demo ID index: each seen once, more than once, or never. Messages of
    a run of `delivery`'s shape are unpacked as any consumer would (fanout.messages); with an envelope each
    item's `seq` must be its ID's index (the demo API serves the IDs in order)."""

    count: int
    delivery: Delivery = Delivery()  # noqa: RUF009 (frozen: one shared default is safe)
    seen: bytearray = field(init=False)
    received: int = 0  # messages
    items: int = 0  # items in them
    foreign: int = 0  # items that are no demo ID below `count`, and messages that are not of the shape
    misplaced: int = 0  # items whose `seq` is not their ID's index
    unreadable: int = 0  # of `foreign`, the messages not of the shape (no item counted in them)

    def __post_init__(self) -> None:
        self.seen = bytearray(self.count)

    def record(self, body: bytes) -> None:
        self.received += 1
        try:
            text = base64.b64decode(body, validate=True).decode("utf-8")
            unpacked = unpack(text, batched=self.delivery.batched, envelope=self.delivery.envelope)
        except (binascii.Error, UnicodeDecodeError, ValueError, KeyError):
            self.foreign += 1
            self.unreadable += 1
            return
        for offset, item in enumerate(unpacked.items):
            self.items += 1
            index = demo_index(item)
            if index is None or index >= self.count:
                self.foreign += 1
                continue
            if unpacked.first_seq is not None and unpacked.first_seq + offset != index:
                self.misplaced += 1
            if self.seen[index] < 255:
                self.seen[index] += 1

    @property
    def missing(self) -> int:
        return self.seen.count(0)

    @property
    def duplicates(self) -> int:
        """Receipts beyond the first of an ID."""
        return self.items - (self.foreign - self.unreadable) - (self.count - self.missing)


class QueueDrain:
    """Receives and deletes the messages of one queue, `receivers` batches in flight."""

    def __init__(self, queue: QueueClient, pool: ConnectionPool, tally: Tally, receivers: int) -> None:
        credential = queue.credential
        if credential is None or not hasattr(credential, "account_key"):
            raise FanoutError("the demo consumer needs an account key (a connection string with AccountKey)")
        sas = generate_queue_sas(
            credential.account_name, queue.queue_name, credential.account_key,
            permission=QueueSasPermissions(read=True, process=True), expiry=datetime.now(UTC) + timedelta(days=1),
        )  # fmt: skip
        path = urlsplit(queue.url).path + "/messages"
        head = f"Host: {pool.host_header}\r\nx-ms-version: {queue.api_version}\r\nContent-Length: 0\r\n\r\n"
        self._receive = (
            f"GET {path}?numofmessages={BATCH}&visibilitytimeout={HIDDEN_SECONDS}&{sas} HTTP/1.1\r\n{head}"
        ).encode("ascii")
        self._delete = (f"DELETE {path}/", f"&{sas} HTTP/1.1\r\n{head}")  # around `{id}?popreceipt={receipt}`
        self._pool = pool
        self._tally = tally
        self._receivers = receivers
        self.name = queue.queue_name

    async def drain(self, finishing: asyncio.Event) -> None:
        """Runs until `finishing` is set and a receive after that finds the queue empty."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self._receivers):
                group.create_task(self._receive_loop(finishing))

    async def _receive_loop(self, finishing: asyncio.Event) -> None:
        while True:
            last_look = finishing.is_set()
            messages = await self._call(self._receive, 200)
            batch = _MESSAGE.findall(messages)
            if not batch:
                if last_look:
                    return
                await asyncio.sleep(_IDLE_POLL)
                continue
            for _, _, text in batch:
                self._tally.record(text)
            await asyncio.gather(*(self._call(self._delete_request(id_, receipt), 204) for id_, receipt, _ in batch))

    def _delete_request(self, message_id: bytes, pop_receipt: bytes) -> bytes:
        receipt = quote(pop_receipt.decode("ascii"), safe="")
        return f"{self._delete[0]}{message_id.decode('ascii')}?popreceipt={receipt}{self._delete[1]}".encode("ascii")

    async def _call(self, request: bytes, expected: int) -> bytes:
        attempts = Attempts(_RETRY, give_up=FanoutError)
        while True:
            try:
                response = await self._pool.request(request)
            except (OSError, ProtocolError, TimeoutError) as exc:
                await attempts.wait(f"the demo consumer's request to {self.name!r} failed: {type(exc).__name__}: {exc}")
                continue
            if response.status == expected or (expected == 204 and response.status == 404):
                return response.body  # 404: a delete retried after its first try went through
            failure = f"the demo consumer's request to {self.name!r} answered {response.status}"
            if response.status not in RETRYABLE_STATUS:
                raise FanoutError(failure)
            await attempts.wait(failure)
