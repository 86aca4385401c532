"""Faults injected and survived: each scenario runs the real CLI (or handlers) against Azurite and the
demo API, then reads the whole queue back and counts what was lost and what was sent twice.

`tests/test_reliability.py` asserts on them; `python -m benchmarks.reliability` prints them as the
README's Reliability table.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunking.chunker import start_chunking
from chunking.request import IngestionRequest
from core.context import app_context
from core.contract import COUNT_METADATA, ChunkRef
from core.settings import Settings
from core.storage import close_storage_clients
from fanout.azurite import PROJECT_ROOT, Azurite, start_azurite
from fanout.demo_api import DemoApi, Faults, demo_ids
from ingestion.chunk import ingest_chunk
from runs.local import ingest_pending_chunks
from testkit.storage_probe import StorageProbe

WINDOW = 32
CHECKPOINT_EVERY = 500
DUPLICATE_BOUND = CHECKPOINT_EVERY + WINDOW  # per interrupted chunk
PARALLEL = 2  # `run --parallel`: the chunks in flight, each of which an interruption may cut
RUN_DUPLICATE_BOUND = DUPLICATE_BOUND * PARALLEL  # a run interrupted with every chunk in flight


@dataclass
class Outcome:
    fault: str
    what_happened: str
    state: str
    source_ids: int
    lost: int
    duplicates: int


class Lab:
    """One Azurite for many scenarios, each with its own queue and run ids."""

    def __init__(self, azurite: Azurite) -> None:
        self.azurite = azurite

    def env(self, queue: str, source_url: str, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AzureWebJobsStorage", "SOURCE_"))}
        return {
            **base,
            "AzureWebJobsStorage": self.azurite.connection_string,
            "SOURCE_URL": source_url,
            "QUEUE_NAME": queue,
            "INGEST_CONCURRENCY": str(WINDOW),
            "INGEST_CHECKPOINT_EVERY": str(CHECKPOINT_EVERY),
            "INGEST_LEASE_SECONDS": "3",
            "SOURCE_RETRY_BASE_DELAY": "0.05",
            **extra,
        }

    @staticmethod
    def new_queue() -> str:
        return f"reliability-{secrets.token_hex(5)}"

    @staticmethod
    def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fanout", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip

    @staticmethod
    def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        """The CLI as a terminal starts it: Ctrl-C (SIGINT) interrupts it even if this process ignores SIGINT."""
        return subprocess.Popen(
            [sys.executable, "-m", "fanout", *args], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip

    def probe(self, queue: str) -> StorageProbe:
        return StorageProbe(self.azurite.connection_string, queue)

    @staticmethod
    def handlers(env: dict[str, str], work: Callable[[Any], Any]) -> Any:
        """Runs `work(ctx)` on the app's own handlers, in this process, on a loop of its own."""

        async def main() -> Any:
            try:
                return await work(await app_context(Settings.from_env(env)))
            finally:
                await close_storage_clients()

        return asyncio.run(main())


def judge(fault: str, what_happened: str, state: str, expected: list[str], delivered: list[str]) -> Outcome:
    counts = Counter(delivered)
    lost = len(set(expected) - counts.keys())
    unexpected = len(counts.keys() - set(expected))
    duplicates = sum(n - 1 for n in counts.values()) + unexpected
    return Outcome(fault, what_happened, state, len(expected), lost, duplicates)


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- faults at the source -------------------------------------------------------------------------


def source_fault(lab: Lab, fault: str, faults: Faults, *, count: int = 2_000, **settings: str) -> Outcome:
    api = DemoApi(count=count, faults=faults).start()
    try:
        queue = lab.new_queue()
        result = lab.cli("run", "--json", env=lab.env(queue, api.url, CHUNK_SIZE="500", **settings))
        summary = summary_of(result)
        requests = api.requests
    finally:
        api.stop()
    expected = demo_ids(summary["messages_fetched"] or 0)
    what = f"{summary['state']} after {requests} source requests" + (
        f"; reason: {summary['error'][:90]}" if summary["error"] else ""
    )
    return judge(fault, what, summary["state"], expected, lab.probe(queue).drain())


def source_503_every_other(lab: Lab) -> Outcome:
    return source_fault(lab, "source: 503 on the 1st and every 2nd request", Faults(every=2, status=503))


def source_429_retry_after(lab: Lab) -> Outcome:
    return source_fault(
        lab, "source: 429 + Retry-After: 1 on the 1st and every 2nd request", Faults(every=2, status=429, retry_after=1)
    )


def source_slow(lab: Lab) -> Outcome:
    return source_fault(lab, "source: answers after 2 s (timeout 0.5 s), 1st and every 2nd request",
                        Faults(every=2, delay=2.0), SOURCE_TIMEOUT="0.5")  # fmt: skip


def source_cut_short(lab: Lab) -> Outcome:
    return source_fault(lab, "source: body cut short on the 1st and every 2nd request", Faults(every=2, truncate=True))


def source_always_503(lab: Lab) -> Outcome:
    return source_fault(lab, "source: 503 on every request", Faults(status=503), SOURCE_MAX_ATTEMPTS="3")


def source_non_json(lab: Lab) -> Outcome:
    return source_fault(lab, "source: HTML instead of JSON", Faults(non_json=True))


# --- faults while ingesting -----------------------------------------------------------------------


def wait_for_queue(probe: StorageProbe, at_least: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while (length := probe.queue_length()) < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue reached only {length} of {at_least} messages in {timeout:.0f} s")
        time.sleep(0.1)
    return length


def process_killed(lab: Lab, count: int = 6_000) -> Outcome:
    """SIGKILL `python -m fanout run` once a third of the messages are in the queue, then `resume`."""
    api = DemoApi(count=count).start()
    try:
        queue = lab.new_queue()
        env = lab.env(queue, api.url, CHUNK_SIZE="1500")
        process = lab.start_cli("run", "--json", "--parallel", str(PARALLEL), env=env)
        run_id = process.stdout.readline().strip().removeprefix("run_id: ")
        at_kill = wait_for_queue(lab.probe(queue), count // 3)
        process.kill()
        process.wait()
        summary = summary_of(lab.cli("resume", run_id, "--json", "--parallel", str(PARALLEL), env=env))
    finally:
        api.stop()
    what = f"SIGKILL with {at_kill:,} in the queue; `resume` → {summary['state']}"
    return judge(
        "process killed mid-chunk (SIGKILL)", what, summary["state"], demo_ids(count), lab.probe(queue).drain()
    )


def wait_for_chunks(probe: StorageProbe, run_id: str, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (written := len(probe.chunk_names(run_id))) < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {written} of {at_least} chunks were written in {timeout:.0f} s")
        time.sleep(0.05)
    return written


@dataclass
class Interruption:
    exit_code: int
    interrupted: dict[str, Any]  # the run's status right after the interruption
    outcome: Outcome  # after `resume`


def interrupted_while_chunking(lab: Lab, count: int = 2_000) -> Interruption:
    """Ctrl-C (SIGINT) on `python -m fanout run` while a slow paged source is being chunked, then `resume`."""
    api = DemoApi(count=count, pagination="cursor", page_size=100, faults=Faults(delay=0.1)).start()
    try:
        queue = lab.new_queue()
        env = lab.env(queue, api.url, CHUNK_SIZE="200", SOURCE_PAGINATION="cursor", SOURCE_ITEMS_PATH="items")
        process = lab.start_cli("run", "--json", "--parallel", str(PARALLEL), env=env)
        run_id = process.stdout.readline().strip().removeprefix("run_id: ")
        at_interrupt = wait_for_chunks(lab.probe(queue), run_id, 3)
        process.send_signal(signal.SIGINT)
        exit_code = process.wait(timeout=60)
        interrupted = json.loads(lab.cli("status", run_id, "--json", env=env).stdout)
        summary = summary_of(lab.cli("resume", run_id, "--json", "--parallel", str(PARALLEL), env=env))
    finally:
        api.stop()
    what = (
        f"SIGINT with {at_interrupt} of {count // 200} chunks written: exit {exit_code}, the run "
        f"{interrupted['state']} with {interrupted['messages']['fetched']} IDs chunked; `resume` → {summary['state']}"
    )
    delivered = lab.probe(queue).drain()
    outcome = judge("Ctrl-C while chunking a paged source", what, summary["state"], demo_ids(count), delivered)
    return Interruption(exit_code, interrupted, outcome)


def storage_outage(lab: Lab, count: int = 6_000) -> Outcome:
    """Stop Azurite (disk persistence) mid-run, start it again on the same ports and folder, `resume`."""
    api = DemoApi(count=count).start()
    with tempfile.TemporaryDirectory(prefix="azurite-outage-") as folder:
        azurite = start_azurite(in_memory=False, location=Path(folder))
        try:
            outage_lab = Lab(azurite)
            queue = outage_lab.new_queue()
            env = outage_lab.env(queue, api.url, CHUNK_SIZE="1500", STORAGE_MAX_RETRIES="1",
                                 STORAGE_RETRY_BACKOFF="0.2", STORAGE_TIMEOUT="3")  # fmt: skip
            process = outage_lab.start_cli("run", "--json", "--parallel", str(PARALLEL), env=env)
            run_id = process.stdout.readline().strip().removeprefix("run_id: ")
            at_stop = wait_for_queue(outage_lab.probe(queue), count // 3)
            azurite.stop()
            exit_code = process.wait(timeout=180)
            azurite.start(in_memory=False)
            summary = summary_of(outage_lab.cli("resume", run_id, "--json", "--parallel", str(PARALLEL), env=env))
            delivered = outage_lab.probe(queue).drain()
        finally:
            azurite.close()
            api.stop()
    what = (
        f"Azurite stopped with {at_stop:,} in the queue (run exited {exit_code}); "
        f"restarted, `resume` → {summary['state']}"
    )
    return judge("storage down mid-run (Azurite stopped)", what, summary["state"], demo_ids(count), delivered)


def duplicate_trigger(lab: Lab, count: int = 1_000) -> Outcome:
    """The same chunk's handler invoked twice at once, as a duplicate blob event would."""
    api = DemoApi(count=count).start()
    queue = lab.new_queue()
    # A lease the first sender keeps however slow the machine: the second must wait, not take over.
    env = lab.env(queue, api.url, CHUNK_SIZE=str(count), INGEST_LEASE_SECONDS="60")

    async def work(ctx: Any) -> list[str]:
        request = IngestionRequest("default", count, f"twice-{secrets.token_hex(4)}")
        record, _ = await start_chunking(ctx, request, budget=None)
        ref = ChunkRef(record.run_id, 0)
        first, second = await asyncio.gather(ingest_chunk(ctx, ref), ingest_chunk(ctx, ref))
        return [first.state, second.state]

    try:
        states = lab.handlers(env, work)
    finally:
        api.stop()
    state = "completed" if states == ["ingested", "ingested"] else "failed"
    return judge("same chunk invoked twice at once", "one sends, the other waits and finds it ingested", state,
                 demo_ids(count), lab.probe(queue).drain())  # fmt: skip


MALFORMED = {
    "not UTF-8": lambda data: data.replace(b"\n", b"\n\xff\xfe", 1),
    "a line that is not JSON": lambda data: data.replace(b'"', b"{", 1),
    "count differs from what chunking wrote": lambda data: data[: data.rindex(b"\n", 0, -1) + 1],
}


def malformed_chunk(lab: Lab, kind: str, count: int = 1_500) -> Outcome:
    """Chunk 1 of 3 corrupted before ingestion: it fails with its reason; fixed and redriven, the run completes."""
    api = DemoApi(count=count).start()
    queue = lab.new_queue()
    env = lab.env(queue, api.url)
    chunks = lab.probe(queue).chunks
    run_id = f"malformed-{secrets.token_hex(4)}"

    async def corrupt_then_ingest(ctx: Any) -> dict[str, Any]:
        await start_chunking(ctx, IngestionRequest("default", count // 3, run_id), budget=None)
        name = ChunkRef(run_id, 1).blob_name
        original = chunks.download_blob(name).readall()
        chunks.upload_blob(name, MALFORMED[kind](original), overwrite=True, metadata={COUNT_METADATA: str(count // 3)})
        await ingest_pending_chunks(ctx, run_id)
        return {"original": original, "name": name}

    try:
        saved = lab.handlers(env, corrupt_then_ingest)
        failed = json.loads(lab.cli("status", run_id, "--json", env=env).stdout)
        chunks.upload_blob(saved["name"], saved["original"], overwrite=True,
                           metadata={COUNT_METADATA: str(count // 3)})  # fmt: skip
        redrive = json.loads(lab.cli("redrive", run_id, "--json", env=env).stdout)
        final = json.loads(lab.cli("status", run_id, "--json", env=env).stdout)
    finally:
        api.stop()
    reason = failed["failed_chunks"][0]["error"] if failed["failed_chunks"] else "no chunk failed"
    what = (
        f"chunk 1 {failed['state']}: {reason[:70]}; "
        f"fixed, redrive queued {redrive['messages_queued']} → {final['state']}"
    )
    return judge(f"malformed chunk: {kind}", what, final["state"], demo_ids(count), lab.probe(queue).drain())


SCENARIOS: dict[str, Callable[[Lab], Outcome]] = {
    "source_503": source_503_every_other,
    "source_429": source_429_retry_after,
    "source_slow": source_slow,
    "source_cut_short": source_cut_short,
    "source_always_503": source_always_503,
    "source_non_json": source_non_json,
    "process_killed": process_killed,
    "interrupted_while_chunking": lambda lab: interrupted_while_chunking(lab).outcome,
    "storage_outage": storage_outage,
    "duplicate_trigger": duplicate_trigger,
    **{f"malformed_{i}": (lambda lab, kind=kind: malformed_chunk(lab, kind)) for i, kind in enumerate(MALFORMED)},
}
