"""A lean Put Message sender: one prebuilt POST per message on a keep-alive connection pool.

The SDK's pipeline costs ~1-2.5 ms of CPU per message and aiohttp's request machinery ~0.4 ms; this
costs ~0.15 ms, so storage, not Python, is the limit. It keeps what the SDK gave: SAS (from an
account key, refreshed before it expires) or Entra ID bearer tokens, base64 or plain text bodies,
TTL, visibility timeout, and retries with exponential backoff on 408/500/503, broken connections
and timeouts; answered 503, it sends fewer at once (putmessage/pace.py). Everything else (creating
queues, reading) stays on the SDK.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

from azure.storage.queue import QueueSasPermissions, generate_queue_sas
from azure.storage.queue.aio import QueueClient

from core.errors import QueueSendError
from core.retry import Attempts, RetryPolicy
from putmessage.connection_pool import ConnectionPool
from putmessage.http_response import ProtocolError
from putmessage.message_body import MessageEncoding, message_body
from putmessage.pace import SendPace

RETRYABLE_STATUS = frozenset({408, 500, 503})
PACED_RETRIES = 8  # 503s a message meets that only the pace answers (no sleep, not counted as attempts)
STORAGE_SCOPE = "https://storage.azure.com/.default"
USER_AGENT = "fanout-put-message/1"
_SAS_LIFETIME = timedelta(hours=2)
_REFRESH_MARGIN = 300.0  # seconds before expiry at which a SAS or token is renewed


def _error(body: bytes) -> str:
    """`Code: first line of Message` from a storage error body."""
    xml = body.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]*)</Code>", xml)
    message = re.search(r"<Message>([^<\n]*)", xml)
    return ": ".join(match.group(1) for match in (code, message) if match) or xml[:200]


class PutMessageSender:
    def __init__(
        self,
        pool: ConnectionPool,
        queue: QueueClient,
        *,
        encoding: MessageEncoding,
        ttl: int | None,
        visibility_timeout: int = 0,
        retry: RetryPolicy,
        pace: SendPace,
        on_retry: Callable[[], None],
    ) -> None:
        """`on_retry` is told of every retry of a send (a paced one, or one after a failure)."""
        self._pool = pool
        self._on_retry = on_retry
        self._pace = pace
        self._paced_retries = PACED_RETRIES if retry.attempts > 1 else 0  # STORAGE_MAX_RETRIES=0: none at all
        self._queue = queue
        self._encoding = encoding
        self._retry = retry
        base, _, sas = queue.url.partition("?")
        self._path = urlsplit(base).path + "/messages"
        options = {"messagettl": ttl, "visibilitytimeout": visibility_timeout or None}
        self._query = "&".join(f"{key}={value}" for key, value in options.items() if value is not None)
        self._fixed_sas = sas
        self._head = b""  # the request up to the Content-Length value, built by _refresh_auth
        self._refresh_at = 0.0
        self._refreshing = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._queue.queue_name

    async def send(self, text: str) -> None:
        if time.time() >= self._refresh_at:
            async with self._refreshing:  # one refresh, however many sends are waiting for it
                if time.time() >= self._refresh_at:
                    await self._refresh_auth()
        body = message_body(text, self._encoding)
        request = b"%b%d\r\n\r\n%b" % (self._head, len(body), body)
        attempts: Attempts | None = None  # made at the first failure: most sends never need one
        pace = self._pace
        paced = 0
        while True:
            epoch = pace.take()
            if epoch is None:
                epoch = await pace.wait()
            stored = throttled = False
            try:
                response = await self._pool.request(request)  # the pool times out a request
                if response.status == 201:
                    stored = True
                    return
                throttled = response.status == 503
                failure = f"Put Message to {self.name!r} answered {response.status} {_error(response.body)}"
                if response.status not in RETRYABLE_STATUS:
                    raise QueueSendError(failure)
            except (OSError, ProtocolError, TimeoutError) as exc:
                failure = f"Put Message to {self.name!r} failed: {type(exc).__name__}: {exc}"
            finally:
                pace.done(epoch, stored=stored, throttled=throttled)
            if throttled and paced < self._paced_retries and pace.sends_at_once > 1:
                paced += 1  # the pace just slowed every send to this queue: this one goes again in its turn
                self._on_retry()
                continue
            attempts = attempts or Attempts(self._retry, give_up=QueueSendError, on_retry=self._on_retry)
            await attempts.wait(failure)

    async def _refresh_auth(self) -> None:
        credential: Any = self._queue.credential
        sas = self._fixed_sas  # a SAS from the connection string, used as it is
        auth = ""
        self._refresh_at = float("inf")
        if hasattr(credential, "get_token"):  # Entra ID: a bearer token, renewed before it expires
            token = await credential.get_token(STORAGE_SCOPE)
            date = formatdate(usegmt=True)  # renewed each minute too, with the token
            auth = f"Authorization: Bearer {token.token}\r\nx-ms-date: {date}\r\n"
            self._refresh_at = min(token.expires_on - _REFRESH_MARGIN, time.time() + 60)
        elif credential is not None:  # an account key: a queue SAS that allows only Put Message
            expiry = datetime.now(UTC) + _SAS_LIFETIME
            sas = generate_queue_sas(
                credential.account_name, self.name, credential.account_key,
                permission=QueueSasPermissions(add=True), expiry=expiry,
            )  # fmt: skip
            self._refresh_at = expiry.timestamp() - _REFRESH_MARGIN
        query = "&".join(part for part in (self._query, sas) if part)
        target = f"{self._path}?{query}" if query else self._path
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {self._pool.host_header}\r\n"
            f"Content-Type: application/xml\r\nx-ms-version: {self._queue.api_version}\r\n"
            f"User-Agent: {USER_AGENT}\r\n{auth}Content-Length: "
        ).encode("ascii")
