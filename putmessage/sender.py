"""A lean Put Message sender: one prebuilt POST per message on a keep-alive connection pool.

The SDK's pipeline costs ~1-2.5 ms of CPU per message and aiohttp's request machinery ~0.4 ms; this
costs ~0.15 ms, so storage, not Python, is the limit. It keeps what the SDK gave: SAS (from an
account key, refreshed before it expires) or Entra ID bearer tokens, base64 or plain text bodies,
TTL, visibility timeout, and retries with exponential backoff; answered 500 or 503, it sends fewer at
once (putmessage/pace.py). What each answer does is in docs/reliability.md#storage-answers. Everything
else (creating queues, reading) stays on the SDK.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import re
import secrets
import ssl
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

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # docs/reliability.md#storage-answers (429: a gateway)
THROTTLED_STATUS = frozenset({500, 503})  # Azure throttles with either: the pace slows for both
AUTH_STATUS = frozenset({401, 403})  # a SAS or token past its time or a policy: renewed once, then fatal
PACED_RETRIES = 8  # 503s a message meets that only the pace answers (no sleep, not counted as attempts)
STORAGE_SCOPE = "https://storage.azure.com/.default"
USER_AGENT = "fanout-put-message/1"
_REFRESH_MARGIN = 300.0  # seconds before expiry at which a SAS or token is renewed, at most
_MESSAGE_CHARS = 1000  # of a storage error's message kept in a failure's reason
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _error(body: bytes) -> str:
    """`Code: Message` from a storage error body, each on one line (controls and runs of white space made one
    space), the code at most 100 characters and the message 1,000; else the body's first 200 characters
    alike. (A SAS signature a gateway echoes goes where every text leaving the app goes: core/redact.py.)"""
    xml = body[: 16 * _MESSAGE_CHARS].decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]*)</Code>", xml)
    message = re.search(r"<Message>([^<]*)", xml)
    if code is None and message is None:
        return _one_line(xml, 200)
    parts = [
        _one_line(code.group(1), 100) if code else "",
        _one_line(message.group(1), _MESSAGE_CHARS) if message else "",
    ]
    return ": ".join(part for part in parts if part)


def _client(client_id: bytes) -> str:
    return f"x-ms-client-request-id {client_id.decode()}"


def _one_line(text: str, most: int) -> str:
    return " ".join(_CONTROLS.sub(" ", html.unescape(text)).split())[:most]


class _NoTokenError(Exception):
    """The storage token could not be had in time: a failure of this attempt, retried as any other."""


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
        sas_lifetime: float,
        user_agent: str = "",
    ) -> None:
        """`on_retry` is told of every retry of a send (a paced one, or one after a failure); `sas_lifetime`:
        seconds a SAS it signs with an account key lasts; `user_agent` is appended to its User-Agent."""
        self._pool = pool
        self._sas_lifetime = timedelta(seconds=sas_lifetime)
        self._user_agent = f"{USER_AGENT} {user_agent}".strip()
        self._ids = f"{secrets.token_hex(8)}-".encode()
        self._sends = itertools.count()
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
        self._fetches = 0  # token fetches ended: a send that waited through a failed one fails with it
        self._no_token = ""  # why the last token fetch failed, "" when it did not

    @property
    def name(self) -> str:
        return self._queue.queue_name

    @property
    def _signs_itself(self) -> bool:
        """It signs with a key (a SAS it mints) or a token it fetches: both can be renewed."""
        return self._queue.credential is not None and not self._fixed_sas

    def _due(self) -> bool:
        """The head must be signed afresh: its auth is about to end, or a 401/403 refused it."""
        return time.time() >= self._refresh_at

    async def _renew(self) -> None:
        fetches = self._fetches
        async with self._refreshing:  # one renewal, however many sends are waiting for it
            if self._fetches != fetches and self._no_token:  # failed while this send waited: not asked again
                raise _NoTokenError(self._no_token)
            if self._due():
                await self._refresh_auth()

    async def send(self, text: str) -> None:
        body = message_body(text, self._encoding)
        client_id = b"%b%d" % (self._ids, next(self._sends))  # the same on every attempt of this message
        attempts: Attempts | None = None  # made at the first failure: most sends never need one
        pace = self._pace
        paced = 0
        renewed = False
        while True:
            epoch = pace.take()
            if epoch is None:
                epoch = await pace.wait()
            stored = throttled = False
            try:
                if self._due():  # each attempt is signed with what is in date as it goes out
                    await self._renew()
                head = self._head
                request = b"%b%d\r\nx-ms-client-request-id: %b\r\n\r\n%b" % (head, len(body), client_id, body)
                response = await self._pool.request(request)  # the pool times out a request
                if response.status == 201:
                    stored = True
                    return
                throttled = response.status in THROTTLED_STATUS
                failure = (
                    f"Put Message to {self.name!r} answered {response.status} {_error(response.body)} "
                    f"(x-ms-request-id {_one_line(response.request_id, 100) or 'none'}, {_client(client_id)})"
                )
                if response.status in AUTH_STATUS and not renewed and self._signs_itself:
                    renewed = True  # a SAS past a policy's limit, a token revoked early: sign afresh, once
                    if self._head is head:  # not renewed since: every send, waiting or not, renews first
                        self._refresh_at = 0.0
                    self._on_retry()
                    continue
                if response.status not in RETRYABLE_STATUS:  # an auth refusal may pass once a role assignment has
                    raise QueueSendError(failure, refused=response.status not in AUTH_STATUS)  # applied: not final
            except _NoTokenError as exc:
                failure = f"Put Message to {self.name!r}: no storage token: {exc} ({_client(client_id)})"
            except ssl.SSLCertVerificationError as exc:  # no retry makes a certificate trusted
                raise QueueSendError(
                    f"Put Message to {self.name!r} failed: {exc} ({_client(client_id)})", refused=True
                ) from None
            except (OSError, ProtocolError, TimeoutError) as exc:
                what = str(exc) or "no answer in time"
                failure = f"Put Message to {self.name!r} failed: {type(exc).__name__}: {what} ({_client(client_id)})"
            finally:
                pace.done(epoch, stored=stored, throttled=throttled)
            if throttled and paced < self._paced_retries and pace.sends_at_once > 1:
                paced += 1  # the pace just slowed every send to this queue: this one goes again in its turn
                self._on_retry()
                continue
            attempts = attempts or Attempts(self._retry, give_up=QueueSendError, on_retry=self._on_retry)
            await attempts.wait(failure)

    async def _refresh_auth(self) -> None:
        """Signs the head afresh; nothing changes unless it succeeds (a send that fails to renew leaves the
        head as it was, and the next one tries again)."""
        credential: Any = self._queue.credential
        sas = self._fixed_sas  # a SAS from the connection string, used as it is
        auth = ""
        refresh_at = float("inf")
        if hasattr(credential, "get_token"):  # Entra ID: a bearer token, renewed before it expires
            try:  # bounded as a request is: a hung identity endpoint must not hold every send behind the lock
                token = await asyncio.wait_for(credential.get_token(STORAGE_SCOPE), self._pool.timeout)
            except Exception as exc:  # the identity endpoint is down, slow or refuses
                self._no_token = f"{type(exc).__name__}: {_one_line(str(exc), 300)}"
                raise _NoTokenError(self._no_token) from None
            finally:
                self._fetches += 1
            self._no_token = ""
            date = formatdate(usegmt=True)  # renewed each minute too, with the token
            auth = f"Authorization: Bearer {token.token}\r\nx-ms-date: {date}\r\n"
            refresh_at = min(token.expires_on - _REFRESH_MARGIN, time.time() + 60)
        elif credential is not None:  # an account key: a queue SAS that allows only Put Message
            expiry = datetime.now(UTC) + self._sas_lifetime
            sas = generate_queue_sas(
                credential.account_name, self.name, credential.account_key,
                permission=QueueSasPermissions(add=True), expiry=expiry,
            )  # fmt: skip
            refresh_at = expiry.timestamp() - min(_REFRESH_MARGIN, self._sas_lifetime.total_seconds() / 4)
        query = "&".join(part for part in (self._query, sas) if part)
        target = f"{self._path}?{query}" if query else self._path
        self._head = (
            f"POST {self._pool.target_prefix}{target} HTTP/1.1\r\nHost: {self._pool.host_header}\r\n"
            f"Content-Type: application/xml\r\nx-ms-version: {self._queue.api_version}\r\n"
            f"User-Agent: {self._user_agent}\r\n{self._pool.proxy_header}{auth}Content-Length: "
        ).encode("ascii")
        self._refresh_at = refresh_at
