"""A loopback token issuer for sources that need a bearer token: an OAuth2 token endpoint
(`POST /token`, client credentials in HTTP Basic) and an App Service managed identity endpoint
(`GET /msi/token`, as azure-identity's `ManagedIdentityCredential` calls it when `IDENTITY_ENDPOINT` and
`IDENTITY_HEADER` are set: the real azure-identity code path, on loopback).

Every token is new and opaque (no JWT: the app must not rely on reading one), lives `lifetime` seconds, and
is remembered, so that a source can refuse an expired or unknown one (`accepts`). `advertised`, when given,
is the lifetime the answers claim instead (an issuer whose tokens die early: revoked, or a clock apart).
`fail_with` answers that status to every request instead; `hang` holds each request that many seconds first.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus, urlsplit

IDENTITY_HEADER = "local-identity-header"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gives up (a timeout test) is no news here."""


class TokenIssuer:
    def __init__(
        self, client_id: str, client_secret: str, lifetime: float = 2.0, advertised: float | None = None
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.lifetime = lifetime
        self.advertised = lifetime if advertised is None else advertised
        self.fail_with: int | None = None
        self.hang = 0.0
        self.calls = 0  # requests at either endpoint
        self.issued: dict[str, float] = {}  # token: expiry (time.time())
        self.forms: list[dict[str, list[str]]] = []  # each token request's form
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        threading.Thread(target=self._server.serve_forever, name="token-issuer", daemon=True).start()
        base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.token_url = f"{base}/token"
        self.identity_endpoint = f"{base}/msi/token"

    def accepts(self, authorization: str | None) -> bool:
        """Whether `authorization` is `Bearer <a token issued here, not yet expired>`."""
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            expiry = self.issued.get(token)
        return scheme == "Bearer" and expiry is not None and time.time() < expiry

    def issue(self) -> tuple[str, float]:
        token = f"tok_{secrets.token_urlsafe(24)}"
        expiry = time.time() + self.lifetime
        with self._lock:
            self.issued[token] = expiry
        return token, expiry

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
            if not self._began() or urlsplit(self.path).path != "/token":
                return
            issuer.forms.append(form)
            basic = base64.b64decode(self.headers.get("Authorization", "Basic ").removeprefix("Basic ")).decode()
            user, _, password = basic.partition(":")
            if (unquote_plus(user), unquote_plus(password)) != (issuer.client_id, issuer.client_secret):
                self._send(401, {"error": "invalid_client", "error_description": "unknown client or wrong secret"})
            elif form.get("grant_type") != ["client_credentials"]:
                self._send(400, {"error": "unsupported_grant_type"})
            else:
                token, _ = issuer.issue()
                self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": issuer.advertised})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if not self._began() or url.path != "/msi/token":
                return
            if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
                self._send(401, {"error": "missing or wrong X-IDENTITY-HEADER"})
                return
            token, _ = issuer.issue()
            resource = parse_qs(url.query).get("resource", [""])[0]
            expires_on = str(int(time.time() + issuer.advertised))
            self._send(200, {"access_token": token, "expires_on": expires_on, "resource": resource,
                             "token_type": "Bearer"})  # fmt: skip

        def _began(self) -> bool:
            """Counts the call; answers the injected failure (after the injected hang) instead, if any."""
            with issuer._lock:
                issuer.calls += 1
            time.sleep(issuer.hang)
            if issuer.fail_with is not None:
                self._send(issuer.fail_with, {"error": "temporarily_unavailable"})
                return False
            return True

        def _send(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


CURSOR = {"SOURCE_PAGINATION": "cursor", "SOURCE_ITEMS_PATH": "items", "SOURCE_CURSOR_PATH": "next_cursor"}


def signed_in_source(source_url: str, token_url: str, client_id: str, client_secret: str) -> dict[str, str]:
    """The settings of a cursor-paged source that takes a client-credentials token from `token_url`, 150 IDs a
    chunk, with a control queue of its own (its continuations are the test's alone)."""
    return {
        **CURSOR, "SOURCE_URL": source_url, "SOURCE_AUTH": "oauth2-client-credentials", "SOURCE_TOKEN_URL": token_url,
        "SOURCE_CLIENT_ID": client_id, "SOURCE_CLIENT_SECRET": client_secret,
        "CONTROL_QUEUE": f"control-{secrets.token_hex(6)}", "CHUNK_SIZE": "150",
    }  # fmt: skip
