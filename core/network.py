"""How the process reaches the network, read once at start-up: its proxies and its one trust store.

Storage (the SDK's aiohttp session and the Put Message sender) and the httpx clients (the source reader, its
token endpoint, the completion events' webhook) verify
certificates with the same `ssl` context: the system store (on Linux OpenSSL's default paths, where
`update-ca-certificates` puts a corporate root CA), or only the PEM bundle `SSL_CERT_FILE` names. httpx
alone would trust certifi's bundle instead, so a root CA that storage trusted was refused by the source.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from typing import Any

from core.proxy import Proxies


@dataclass(frozen=True)
class Network:
    proxies: Proxies = field(default_factory=Proxies)
    ca_file: str | None = None  # SSL_CERT_FILE: trusted instead of the system store

    @property
    def tls(self) -> ssl.SSLContext:
        return trust_store(self.ca_file)

    def httpx_options(self, url: str) -> dict[str, Any]:
        """An httpx client's trust and proxy for calls to `url`'s origin (the environment is never read again)."""
        proxy = self.proxies.for_url(url)
        return {"verify": self.tls, "proxy": proxy.url if proxy else None, "trust_env": False}


@functools.cache
def trust_store(ca_file: str | None) -> ssl.SSLContext:
    """One TLS context per process and CA file (loading a store takes ~50 ms of CPU), shared by every client."""
    return ssl.create_default_context(cafile=ca_file)
