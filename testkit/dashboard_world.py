"""What the dashboard's browser tests run against: Azurite, two demo APIs (a quick one and a slow paged
one), `python -m fanout serve` in a process of its own, and headless Debian chromium via Playwright."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from api.http import start_ingestion
from core.storage import close_storage_clients
from fanout.azurite import PROJECT_ROOT, Azurite, free_port, start_azurite
from fanout.demo_api import DemoApi, Faults
from fanout.serve import blob_input
from ingestion.trigger import ingest_chunk_blob
from testkit.http_requests import post_ingestion
from testkit.storage_probe import StorageProbe

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
IDS = 300
KEY = f"key-{secrets.token_hex(8)}"


@dataclass
class DashboardWorld:
    base: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    failed_run: str  # a run whose chunk 1 failed, made before `serve` started

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.base}/api/{path}", headers={"x-functions-key": KEY}, timeout=30, **kwargs)


def app_env(azurite: Azurite, quick: DemoApi, slow: DemoApi) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "SOURCE_URL": f"{quick.url}?count={IDS}",
        "SOURCE_SLOW__URL": f"{slow.url}?count={IDS}",
        "SOURCE_SLOW__PAGINATION": "page",
        "SOURCE_SLOW__PAGE_SIZE": "10",
        "SOURCE_SLOW__ITEMS_PATH": "data",
        "CHUNKING_TIME_BUDGET": "1",
        "HTTP_RETRY_AFTER": "1",
        "QUEUE_NAME": f"ingest-{secrets.token_hex(4)}",
        "FANOUT_FUNCTION_KEY": KEY,
    }


async def _make_failed_run(run_id: str, env: dict[str, str]) -> None:
    """A run of three chunks: 0 ingested, 1 handed over broken (as a bad delivery would be): failed, and
    chunk 2 stopped with it. And a second run, chunked, that `serve` ingests when it starts."""
    try:
        await start_ingestion(post_ingestion({"run_id": "second-run", "chunk_size": IDS}))
        await start_ingestion(post_ingestion({"run_id": run_id, "chunk_size": IDS // 3}))
        probe = StorageProbe(env["AzureWebJobsStorage"], env["QUEUE_NAME"])
        for number, name in enumerate(probe.chunk_names(run_id)):
            download = probe.chunks.download_blob(name)
            data = b"{broken\n" if number == 1 else download.readall()
            await ingest_chunk_blob(blob_input("chunks", name, data, download.properties.metadata))
    finally:
        await close_storage_clients()


@contextlib.contextmanager
def dashboard_world() -> Iterator[DashboardWorld]:
    azurite = start_azurite()
    quick = DemoApi(count=IDS).start()
    slow = DemoApi(count=IDS, faults=Faults(delay=0.4), pagination="page", page_size=10).start()
    env = app_env(azurite, quick, slow)
    saved = dict(os.environ)
    os.environ.update(env)
    server = None
    try:
        asyncio.run(_make_failed_run("broken-chunk", env))
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "fanout", "serve", "--port", str(port)], cwd=PROJECT_ROOT, env=dict(os.environ),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert server.stdout is not None
        assert "serving the app" in server.stdout.readline()
        yield DashboardWorld(f"http://127.0.0.1:{port}", env, "broken-chunk")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        slow.stop()
        quick.stop()
        azurite.close()
