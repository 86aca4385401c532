"""A forward proxy on loopback to the hosts it knows: the only way to a host name that does not resolve (`hosts`
maps it to an address), as behind a corporate proxy. It tunnels CONNECT (an https:// URL), and forwards a
request in absolute form (`GET http://host:port/path`, an http:// URL) one to a connection. It counts the
tunnels and the forwarded requests by target, keeps each request's `Proxy-Authorization`, and with
`credentials` answers 407 to any other; a target it does not know gets 502; any other request 405."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from urllib.parse import urlsplit

from testkit.loop_server import LoopServer, pipe

_HOP_BY_HOP = ("connection:", "proxy-", "keep-alive:")


class LoopbackProxy(LoopServer):
    def __init__(self, hosts: dict[str, str], credentials: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.hosts = hosts
        self.tunnels: Counter[str] = Counter()  # target (host:port): tunnels opened
        self.forwarded: Counter[str] = Counter()  # target (host:port): absolute-form requests forwarded
        self.authorizations: list[str] = []  # each CONNECT's Proxy-Authorization, "" when it had none
        self.refused: list[str] = []  # each refusal's status and target
        self._expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode() if credentials else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        method, target, version = head.split("\r\n", 1)[0].split(" ", 2)
        fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        absolute = urlsplit(target) if target.startswith("http://") else None
        if absolute is not None:
            target = f"{absolute.hostname}:{absolute.port or 80}"
        host, _, port = target.rpartition(":")
        if method != "CONNECT" and absolute is None:
            status = "405 Method Not Allowed"
        else:
            self.authorizations.append(fields.get("Proxy-Authorization", ""))
            if self._expected is not None and self.authorizations[-1] != self._expected:
                status = "407 Proxy Authentication Required"
            elif host.strip("[]") not in self.hosts:
                status = "502 Bad Gateway"
            else:
                status = "200 Connection established"
        if not status.startswith("200"):
            self.refused.append(f"{status} {target}")
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(self.hosts[host.strip("[]")], int(port))
        if absolute is None:
            self.tunnels[target] += 1
            writer.write(f"HTTP/1.1 {status}\r\n\r\n".encode())
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
            return
        self.forwarded[target] += 1
        path = absolute.path or "/"
        kept = [line for line in head.split("\r\n")[1:] if line and not line.lower().startswith(_HOP_BY_HOP)]
        upstream_writer.write("\r\n".join([f"{method} {path}{'?' if absolute.query else ''}{absolute.query} {version}",
                                            *kept, "Connection: close", "", ""]).encode("latin-1"))  # fmt: skip
        body = asyncio.ensure_future(pipe(reader, upstream_writer))  # a request's body, if any
        answer = (await upstream_reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        answer = [line for line in answer[:-2] if not line.lower().startswith(_HOP_BY_HOP)]
        writer.write("\r\n".join([*answer, "Connection: close", "", ""]).encode("latin-1"))  # one a connection
        await pipe(upstream_reader, writer)
        body.cancel()
