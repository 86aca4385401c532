"""Which proxy, if any, a URL goes through: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`, read once.

Settings read them at start-up (core/settings.py), the lower-case form first where both are set (as
curl and urllib do); nothing reads the environment per request (the SDK's transports did, for ~0.6 ms of
CPU each). A proxy is reached over plain HTTP (`http://[user:password@]host[:port]`, port 80 if none); its
credentials go into `Proxy-Authorization` only, never into a repr or a message. `NO_PROXY` is matched by
urllib's rule: `*`, or host names (a name covers its subdomains), each with an optional port.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed

from core.errors import SettingsError


def host_and_port(host: str, port: int) -> str:
    """`host:port` as a CONNECT line names it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Proxy:
    """A forward proxy: where it listens and the `Proxy-Authorization` its URL's credentials make."""

    url: str = field(repr=False)  # as configured, credentials and all: aiohttp takes them from it
    host: str
    port: int
    authorization: str = field(default="", repr=False)  # "Basic …", or "" when the URL has no user

    def __str__(self) -> str:
        return f"proxy {self.address}"

    @property
    def address(self) -> str:
        """`host:port`, as a CONNECT line and a message name the proxy (never its credentials)."""
        return host_and_port(self.host, self.port)


@dataclass(frozen=True)
class Proxies:
    """The process's proxies for http and https targets, and the hosts that bypass them."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: str = ""

    def for_url(self, url: str) -> Proxy | None:
        """The proxy `url` goes through, or None: direct (no proxy for its scheme, or NO_PROXY names its host)."""
        parts = urlsplit(url)
        proxy = {"https": self.https, "http": self.http}.get(parts.scheme)
        if proxy is None or proxy_bypass_environment(parts.netloc.rpartition("@")[2], {"no": self.no_proxy}):
            return None
        return proxy

    @property
    def urls(self) -> list[str]:
        """The configured proxies' URLs, credentials and all (Settings lists their secrets for the redactor)."""
        return [proxy.url for proxy in (self.http, self.https) if proxy is not None]


def proxy_of(value: str, name: str) -> Proxy:
    """The proxy `value` names; a SettingsError naming `name` (never the credentials) if it names none."""
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        parts, port = None, 0
    if (
        parts is None or parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/")
        or "?" in url or "#" in url  # a password's `?` or `#` not percent-encoded: it would name another proxy
    ):  # fmt: skip
        shown = url.rpartition("@")[2] if parts is None or parts.username is None else f"…@{url.rpartition('@')[2]}"
        raise SettingsError(
            f"{name} must be a proxy reached over plain HTTP, http://[user:password@]host[:port] (percent-encode a "
            f"'@', ':', '#', '?' or '/' in the user or password), got {shown[:80]!r}"
        )
    authorization = ""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return Proxy(url, parts.hostname, port, authorization)
