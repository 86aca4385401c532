"""Which proxy, if any, a URL goes through: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`, read once.

Settings read them at start-up (core/settings.py), the lower-case form first where both are set (as
curl and urllib do); nothing reads the environment per request (the SDK's transports did, for ~0.6 ms of
CPU each). A proxy is reached over plain HTTP (`http://[user:password@]host[:port]`, port 80 if none); its
credentials go into `Proxy-Authorization` only, never into a repr or a message. `NO_PROXY` entries, as
curl and Go read them: `*` alone (every host), a host name (it covers its subdomains; a leading `.` or `*.`
changes nothing), an IP address (IPv6 with or without brackets) or a CIDR block, each with an optional
`:port` (a URL without one has its scheme's). urllib's matcher, which takes no CIDR, no `*.` and no bare
IPv6, silently sent such hosts through the proxy; no well-kept library matches NO_PROXY on its own, so
the rule is written here (stdlib `ipaddress`).
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import unquote, urlsplit

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
        if proxy is None:
            return None
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        return None if any(entry.covers(host, port) for entry in self._bypass) else proxy

    @cached_property
    def _bypass(self) -> tuple[_Bypass, ...]:
        return tuple(_Bypass.of(entry.strip()) for entry in self.no_proxy.split(",") if entry.strip())

    @property
    def urls(self) -> list[str]:
        """The configured proxies' URLs, credentials and all (Settings lists their secrets for the redactor)."""
        return [proxy.url for proxy in (self.http, self.https) if proxy is not None]


_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Bypass:
    """One NO_PROXY entry: every host, a name and its subdomains, or an address block; any port or one."""

    name: str = ""  # lower case, no leading dot ("" with `network`, or for `*`)
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    @classmethod
    def of(cls, entry: str) -> _Bypass:
        if entry == "*":
            return cls()
        host, port = entry, None
        if entry.startswith("["):  # [v6] or [v6]:port
            host, _, rest = entry[1:].partition("]")
            port = int(rest[1:]) if rest[1:].isdigit() else None
        elif entry.count(":") == 1:  # name:port or v4:port (a bare v6 address has more colons)
            host, _, given = entry.partition(":")
            port = int(given) if given.isdigit() else None
        try:
            return cls(network=ipaddress.ip_network(host, strict=False), port=port)
        except ValueError:
            return cls(name=host.lower().removeprefix("*").lstrip("."), port=port)

    def covers(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        host = host.lower()
        return not self.name or host == self.name or host.endswith("." + self.name)


def proxy_of(value: str, name: str) -> Proxy:
    """The proxy `value` names; a SettingsError naming `name` (never the credentials) if it names none."""
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(url)
        port = parts.port if parts.port is not None else 80
    except ValueError:
        parts, port = None, 0
    if (
        parts is None or parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or not port
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
