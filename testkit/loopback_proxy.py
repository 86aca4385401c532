"""A forward proxy on loopback that tunnels CONNECT to the hosts it knows: the only way to a host name that
does not resolve (`hosts` maps it to an address), as behind a corporate proxy. It counts the tunnels by
target, keeps each CONNECT's `Proxy-Authorization`, and with `credentials` answers 407 to any other; a
target it does not know gets 502; a request that is no CONNECT gets 405."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections import Counter


class LoopbackProxy:
    def __init__(self, hosts: dict[str, str], credentials: tuple[str, str] | None = None) -> None:
        self.hosts = hosts
        self.tunnels: Counter[str] = Counter()  # target (host:port): tunnels opened
        self.authorizations: list[str] = []  # each CONNECT's Proxy-Authorization, "" when it had none
        self.refused: list[str] = []  # each refusal's status and target
        self._expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode() if credentials else None
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        method, target, _ = head.split(" ", 2)
        fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        host, _, port = target.rpartition(":")
        if method != "CONNECT":
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
        self.tunnels[target] += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(self.hosts[host.strip("[]")], int(port))
        writer.write(f"HTTP/1.1 {status}\r\n\r\n".encode())
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
