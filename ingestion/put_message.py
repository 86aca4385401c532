"""A lean Put Message sender: one POST per message on the storage clients' aiohttp session.

The SDK's pipeline costs ~1 ms of CPU per message; this costs a fraction of that, so storage, not
Python, is the limit. It keeps what the SDK gave: SAS (from an account key, refreshed before it
expires) or Entra ID bearer tokens, base64 or plain text bodies, TTL, and retries with exponential
backoff on 408/500/503 and timeouts. Everything else (creating queues, reading) stays on the SDK.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any

import aiohttp
import yarl
from azure.storage.queue import QueueSasPermissions, generate_queue_sas
from azure.storage.queue.aio import QueueClient

from fanout.errors import QueueSendError
from fanout.settings import MessageEncoding, StorageConfig
from ingestion.message_body import message_body

RETRYABLE_STATUS = frozenset({408, 500, 503})
STORAGE_SCOPE = "https://storage.azure.com/.default"
_SAS_LIFETIME = timedelta(hours=2)
_REFRESH_MARGIN = 300.0  # seconds before expiry at which a SAS or token is renewed


def _error(xml: str) -> str:
    """`Code: first line of Message` from a storage error body."""
    code = re.search(r"<Code>([^<]*)</Code>", xml)
    message = re.search(r"<Message>([^<\n]*)", xml)
    return ": ".join(match.group(1) for match in (code, message) if match) or xml[:200]


class PutMessageSender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        queue: QueueClient,
        storage: StorageConfig,
        encoding: MessageEncoding,
        ttl: int | None,
    ) -> None:
        self._session = session
        self._queue = queue
        self._encoding = encoding
        self._retries = storage.max_retries
        self._backoff = storage.retry_backoff
        self._timeout = aiohttp.ClientTimeout(total=storage.timeout)
        base, _, sas = queue.url.partition("?")
        self._messages_url = f"{base}/messages"
        self._query = {"messagettl": str(ttl)} if ttl is not None else {}
        self._fixed_sas = sas
        self._headers = {"Content-Type": "application/xml", "x-ms-version": queue.api_version}
        self._url = yarl.URL()
        self._refresh_at = 0.0

    @property
    def name(self) -> str:
        return self._queue.queue_name

    async def send(self, text: str) -> None:
        if time.time() >= self._refresh_at:
            await self._refresh_auth()
        body = message_body(text, self._encoding)
        for attempt in range(self._retries + 1):
            try:
                async with self._session.post(
                    self._url, data=body, headers=self._headers, timeout=self._timeout
                ) as response:
                    if response.status == 201:
                        return
                    failure = f"Put Message to {self.name!r} answered {response.status} {_error(await response.text())}"
                    if response.status not in RETRYABLE_STATUS:
                        raise QueueSendError(failure)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                failure = f"Put Message to {self.name!r} failed: {type(exc).__name__}: {exc}"
            if attempt == self._retries:
                raise QueueSendError(f"{failure} (gave up after {attempt + 1} attempts)")
            await asyncio.sleep(self._backoff * 2**attempt * random.uniform(0.5, 1.5))

    async def _refresh_auth(self) -> None:
        credential: Any = self._queue.credential
        sas = self._fixed_sas  # a SAS from the connection string, used as it is
        self._refresh_at = float("inf")
        if hasattr(credential, "get_token"):  # Entra ID: a bearer token, renewed before it expires
            token = await credential.get_token(STORAGE_SCOPE)
            self._headers["Authorization"] = f"Bearer {token.token}"
            self._headers["x-ms-date"] = formatdate(usegmt=True)  # so it is renewed each minute too
            self._refresh_at = min(token.expires_on - _REFRESH_MARGIN, time.time() + 60)
        elif credential is not None:  # an account key: a queue SAS that allows only Put Message
            expiry = datetime.now(UTC) + _SAS_LIFETIME
            sas = generate_queue_sas(
                credential.account_name, self.name, credential.account_key,
                permission=QueueSasPermissions(add=True), expiry=expiry,
            )  # fmt: skip
            self._refresh_at = expiry.timestamp() - _REFRESH_MARGIN
        query = "&".join(part for part in (*(f"{k}={v}" for k, v in self._query.items()), sas) if part)
        self._url = yarl.URL(f"{self._messages_url}?{query}" if query else self._messages_url, encoded=True)
