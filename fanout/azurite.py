"""Starts and stops Azurite from this project's node_modules, on free loopback ports.

With a certificate and key it serves HTTPS and accepts Entra ID bearer tokens (`--oauth basic`:
Azurite checks a token's issuer, audience and lifetime, not its signature), so the identity path
runs locally too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import FanoutError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
QUEUE_GC_LAUNCHER = Path(__file__).with_name("azurite_queue_gc.js")
_PR_SET_PDEATHSIG = 1
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _stop_with_parent() -> None:
    """Linux: Azurite is killed when the process that started it dies, however it dies (a busy Azurite
    can outlive a SIGTERM for minutes; in memory or on disk, its state is the run's scratch)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on loopback: held open together while picked (one at a time, the system
    may hand the same port out twice, and Azurite then fails to listen on its second service)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    location: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    tls: tuple[Path, Path] | None = None  # (certificate, key), PEM: HTTPS and bearer tokens
    queue_gc_ms: int | None = None  # the queue clean-up's interval (Azurite's own: 60 s); see azurite_queue_gc.js
    _scratch: bool = field(default=False, repr=False)

    def service_uri(self, service: str) -> str:
        """The account's endpoint for "blob", "queue" or "table", as identity-based settings name it."""
        port = {"blob": self.blob_port, "queue": self.queue_port, "table": self.table_port}[service]
        return f"{self.scheme}://127.0.0.1:{port}/{ACCOUNT}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.service_uri('blob')};QueueEndpoint={self.service_uri('queue')};"
            f"TableEndpoint={self.service_uri('table')};"
        )

    def start(self, *, in_memory: bool) -> Azurite:
        if not AZURITE_BIN.exists():
            raise FanoutError(f"Azurite is not installed at {AZURITE_BIN}: run `make setup` (npm ci)")
        node = shutil.which("node") if self.queue_gc_ms else None
        launcher = [node, str(QUEUE_GC_LAUNCHER)] if node else [str(AZURITE_BIN)]
        env = {**os.environ, "FANOUT_AZURITE_QUEUE_GC_MS": str(self.queue_gc_ms or "")}
        args = [*launcher, "--silent", "--skipApiVersionCheck", "--disableTelemetry",
                "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
                "--blobPort", str(self.blob_port), "--queuePort", str(self.queue_port),
                "--tablePort", str(self.table_port)]  # fmt: skip
        # --inMemoryPersistence refuses --location: the scratch directory is the working directory instead.
        args += ["--inMemoryPersistence"] if in_memory else ["--location", str(self.location)]
        if self.tls:
            args += ["--cert", str(self.tls[0]), "--key", str(self.tls[1]), "--oauth", "basic"]
        with open(self.location / "azurite-stderr.log", "ab") as stderr:
            self.process = subprocess.Popen(
                args, cwd=self.location, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                preexec_fn=_stop_with_parent,
            )  # fmt: skip
        self._wait_until_listening()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stops Azurite and removes its scratch directory if this object made it."""
        self.stop()
        if self._scratch:
            shutil.rmtree(self.location, ignore_errors=True)

    def _wait_until_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for port in (self.blob_port, self.queue_port, self.table_port):
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    error = (self.location / "azurite-stderr.log").read_text(errors="replace")
                    raise FanoutError(f"Azurite exited with {self.process.returncode}: {error.strip()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise FanoutError(f"Azurite did not listen on port {port} within {timeout:.0f} s") from None
                    time.sleep(0.05)


def start_azurite(
    *,
    in_memory: bool = True,
    location: Path | None = None,
    tls: tuple[Path, Path] | None = None,
    queue_gc_ms: int | None = None,
) -> Azurite:
    """A new Azurite on free ports; in memory by default, else persisted under `location`; with
    `queue_gc_ms`, its queue clean-up runs that often (for a long run that deletes what it receives)."""
    scratch = location is None
    location = Path(tempfile.mkdtemp(prefix="azurite-")) if location is None else location
    location.mkdir(parents=True, exist_ok=True)
    blob, queue, table = free_ports(3)
    azurite = Azurite(blob, queue, table, location, tls=tls, queue_gc_ms=queue_gc_ms, _scratch=scratch)
    return azurite.start(in_memory=in_memory)
