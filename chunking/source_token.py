"""A source's bearer token (SOURCE_AUTH): fetched when first needed, kept by the process, renewed before it
expires and once after the source refuses it.

Invariants:
- a token lives in this process's memory only: never in a run record, a continuation, a chunk blob, a
  status, a problem answer or a log line (each token is handed to the redactor as it comes,
  `core.redact.install_token`, so that a source echoing it shows `[redacted]`);
- one token per sign-in (`SourceAuth`) and event loop, shared by every run and continuation of the process;
  one fetch at a time, however many readers wait on it; a token refused by the source is replaced once,
  unless another reader replaced it already;
- every fetch is bounded: `SOURCE_TIMEOUT` a call (its whole answer, however it trickles),
  `SOURCE_MAX_ATTEMPTS` calls (408, 429, 5xx, timeouts and connection errors are retried), and the
  reader's time box around it all; a fetch that fails raises
  SourceError naming the setting to check, and the run fails visibly (resumable by a redrive).

OAuth2 client credentials are one form POST (RFC 6749 §4.4) made with httpx, the client authenticated with
HTTP Basic (§2.3.1: every token endpoint must accept it; Entra ID does). Entra ID tokens come from
azure-identity's `DefaultAzureCredential` (the app's managed identity in Azure). That credential keeps a
cache of its own, which would hand back the very token the source refused: each fetch here uses a new
credential, closed after it, so every fetch reaches the identity endpoint (fetches are rare: this module is
the cache).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote_plus

import httpx
from azure.identity import CredentialUnavailableError

from core.errors import SourceError
from core.network import Network
from core.redact import install_token, public_text
from core.retry import Attempts, RetryPolicy, retry_after_seconds
from core.settings import SOURCE_CLIENT_ID, SOURCE_SCOPE, SOURCE_TOKEN_URL, SourceAuth, SourceConfig
from core.storage import once_per_loop

log = logging.getLogger(__name__)

REFRESH_MARGIN = 300.0  # seconds before expiry at which a token is renewed, at most (a quarter of its life)
MAX_TOKEN_ANSWER_BYTES = 64 * 1024  # of a token endpoint's answer; a longer one is refused
MAX_TOKEN_LIFETIME = 365 * 24 * 3600  # seconds a token is kept at most, whatever longer life its issuer says
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_EXCERPT_CHARS = 300


@dataclass(frozen=True)
class Token:
    """A bearer token; `expires_at` in `time.time()` seconds (None: the issuer did not say, so it is kept
    until the source refuses it)."""

    text: str
    expires_at: float | None
    fetched_at: float

    @property
    def renew_at(self) -> float:
        if self.expires_at is None:
            return float("inf")
        return self.expires_at - min(REFRESH_MARGIN, max(self.expires_at - self.fetched_at, 0.0) / 4)


class _TransientTokenError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


Fetch = Callable[[], Awaitable[Token]]


class SourceToken:
    """The token of one sign-in, held for the process (see the module's invariants); `clock` is `time.time`'s."""

    def __init__(self, auth: SourceAuth, clock: Callable[[], float] = time.time) -> None:
        self._auth = auth
        self._clock = clock
        self._token: Token | None = None
        self._fetching = asyncio.Lock()

    async def current(self, fetch: Fetch) -> str:
        """The token to send: the one held until it is due for renewal, else a new one from `fetch`."""
        token = self._token
        if token is not None and self._clock() < token.renew_at:
            return token.text
        async with self._fetching:
            token = self._token
            if token is None or self._clock() >= token.renew_at:
                token = await self._fetch(fetch)
            return token.text

    async def refused(self, text: str, fetch: Fetch) -> str:
        """After the source answered 401 to `text`: a new token, unless another reader replaced it already."""
        async with self._fetching:
            token = self._token
            if token is None or token.text == text:
                token = await self._fetch(fetch)
            return token.text

    async def _fetch(self, fetch: Fetch) -> Token:
        token = await fetch()
        install_token(self._auth, token.text)  # before anything can echo it
        self._token = token
        life = "no expiry given" if token.expires_at is None else f"expires in {token.expires_at - self._clock():.0f} s"
        log.info("source token (%s) renewed: %s", self._auth.mode, life)
        return token

    def close(self) -> None:
        """Forgets the token (the process's loop is closing)."""
        self._token = None


def source_token(auth: SourceAuth) -> SourceToken:
    """The process's holder of `auth`'s token on the running loop; call from a coroutine."""
    return once_per_loop(("source token", auth), lambda: SourceToken(auth))


async def fetch_token(source: SourceConfig, timeout: float, retry: RetryPolicy, network: Network) -> Token:
    """A new token for `source`, each call bounded by `timeout`, transient failures retried under `retry`, the
    token endpoint reached under `network` (the one trust store and proxy rule); SourceError when none can be had."""
    attempts = Attempts(retry, give_up=SourceError)
    while True:
        try:
            async with asyncio.timeout(timeout):  # a whole answer within it, however slowly its bytes trickle
                if source.auth.mode == "entra":
                    return await _entra_token(source, timeout, network)
                return await _oauth2_token(source, timeout, network)
        except TimeoutError:
            setting = source.setting_name(SOURCE_TOKEN_URL)
            await attempts.wait(f"source {source.name!r}: the token endpoint ({setting}) failed: no whole answer "
                                f"within {timeout:g} s")  # fmt: skip
        except _TransientTokenError as exc:
            await attempts.wait(str(exc), retry_after=exc.retry_after)
        except httpx.TransportError as exc:  # timeouts and connection errors
            setting = source.setting_name(SOURCE_TOKEN_URL)
            failure = f"source {source.name!r}: the token endpoint ({setting}) failed: {type(exc).__name__}: {exc}"
            await attempts.wait(_excerpt(failure, 1000))


async def _oauth2_token(source: SourceConfig, timeout: float, network: Network) -> Token:
    """One client-credentials grant at the token endpoint."""
    auth, where, setting = source.auth, f"source {source.name!r}", source.setting_name(SOURCE_TOKEN_URL)
    assert auth.token_url and auth.client_id and auth.client_secret  # checked by the settings
    form = {"grant_type": "client_credentials", **({"scope": auth.scope} if auth.scope else {})}
    basic = httpx.BasicAuth(quote_plus(auth.client_id), quote_plus(auth.client_secret))  # §2.3.1: form-encoded
    fetched_at = time.time()
    async with (
        httpx.AsyncClient(timeout=timeout, follow_redirects=False, **network.httpx_options(auth.token_url)) as client,
        client.stream("POST", auth.token_url, data=form, auth=basic, headers={"Accept": "application/json"}) as answer,
    ):
        body = await _bounded_body(answer, where, setting)
    said = f"{where}: the token endpoint ({setting}) answered {answer.status_code}"
    if answer.status_code in _RETRYABLE_STATUS:
        raise _TransientTokenError(f"{said}: {_excerpt(body)}", retry_after_seconds(answer.headers.get("Retry-After")))
    if not answer.is_success:
        raise SourceError(f"{said}: {_excerpt(body)}; check {setting}, the client id and the client secret")
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError):
        fields = None
    text = fields.get("access_token") if isinstance(fields, dict) else None
    if not isinstance(text, str) or not text or not text.isascii() or not text.isprintable():
        raise SourceError(f"{said} without an access_token (a JSON object with one is expected)")
    install_token(auth, text)  # before any reason below could show it
    kind = fields.get("token_type", "Bearer")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise SourceError(f"{said} with a token_type of {_excerpt(json.dumps(kind))}; only Bearer tokens are sent")
    lifetime = fields.get("expires_in")
    if isinstance(lifetime, str) and lifetime.isdigit():
        lifetime = int(lifetime)  # some issuers send it as a string
    if lifetime is not None and (
        isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or not lifetime > 0  # NaN is not
    ):
        raise SourceError(f"{said} with an expires_in of {_excerpt(json.dumps(lifetime))}: a positive number expected")
    life = None if lifetime is None else min(lifetime, MAX_TOKEN_LIFETIME)  # 10**400 would overflow a float
    return Token(text, None if life is None else fetched_at + life, fetched_at)


async def _bounded_body(answer: httpx.Response, where: str, setting: str) -> bytes:
    body = b""
    async for part in answer.aiter_bytes():
        body += part
        if len(body) > MAX_TOKEN_ANSWER_BYTES:
            raise SourceError(
                f"{where}: the token endpoint ({setting}) answered more than {MAX_TOKEN_ANSWER_BYTES:,} bytes"
            )
    return body


async def _entra_token(source: SourceConfig, timeout: float, network: Network) -> Token:
    """A token for SOURCE_SCOPE as the app's identity, from a new credential (see the module's docstring)."""
    auth, where = source.auth, f"source {source.name!r}"
    assert auth.scope  # checked by the settings
    fetched_at = time.time()
    client = auth.client_id or "the system-assigned identity"
    identity = f"the app's identity ({client}; {source.setting_name(SOURCE_CLIENT_ID)}) for {auth.scope!r}"
    try:
        async with network.credential(auth.client_id) as credential:
            async with asyncio.timeout(timeout):
                token = await credential.get_token_info(auth.scope)
    except CredentialUnavailableError as exc:
        raise SourceError(f"{where}: no Entra ID token for {identity}: {_excerpt(str(exc))}") from None
    except TimeoutError:
        raise _TransientTokenError(f"{where}: no Entra ID token for {identity} within {timeout:g} s") from None
    except Exception as exc:  # the identity endpoint refused or failed: azure-identity's errors, aiohttp's
        scope = source.setting_name(SOURCE_SCOPE)
        reason = f"{where}: no Entra ID token for {identity} ({scope}): {type(exc).__name__}: {exc}"
        raise _TransientTokenError(_excerpt(reason, 1000)) from None
    install_token(auth, token.token)
    return Token(token.token, float(token.expires_on), fetched_at)


def _excerpt(text: bytes | str, limit: int = _EXCERPT_CHARS) -> str:
    """What may be shown of a token endpoint's answer: redacted, then cut."""
    return public_text(text.decode("utf-8", "replace") if isinstance(text, bytes) else text, limit)
