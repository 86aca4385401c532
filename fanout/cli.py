"""`python -m fanout`: run the pipeline, watch a run, serve the demo API, or run the whole demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from chunking.request import IngestionRequest, new_run_id, parse_ingestion_request
from core.context import app_context
from core.contract import RUN_ID_RULE, is_run_id
from core.errors import FanoutError, RequestError, RunNotFoundError
from core.purge import PurgeResult, purge_run
from core.settings import DEMO_API_PORT, MAX_CHUNK_SIZE, Settings
from core.status import RunStatus, run_status
from core.storage import close_storage_clients
from fanout.azurite import start_azurite
from fanout.demo_api import PAGINATIONS, DemoApi, Faults
from fanout.pipeline import resume_run, run_pipeline
from fanout.settings_table import settings_table
from ingestion.redrive import Progress, RedriveResult, redrive_run
from ingestion.target import queue_length


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except FanoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fanout", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="chunk the configured source and ingest every chunk, in this process")
    run.add_argument("--source", help="a configured source name (default: the SOURCE_URL source)")
    run.add_argument("--chunk-size", type=int, help=f"messages per chunk, 1..{MAX_CHUNK_SIZE} (default: CHUNK_SIZE)")
    run.add_argument("--run-id", help="an id for the run (default: a new one)")
    run.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    run.set_defaults(handler=_run)

    for name, handler, purpose, as_json in [
        (
            "resume",
            _resume,
            "finish a run whose process died, from its checkpoints",
            "end with a one-line JSON summary",
        ),
        ("redrive", _redrive, "re-ingest a run's failed and stalled chunks", "print what was queued as JSON"),
        ("status", _status, "show a run's status", "print the status as JSON"),
        ("purge", _purge, "delete a finished run's chunks, statuses, old claim checks and record", "print as JSON"),
    ]:
        command = commands.add_parser(name, help=purpose)
        command.add_argument("run_id", metavar="RUN_ID", type=_run_id)
        command.add_argument("--json", action="store_true", help=as_json)
        command.set_defaults(handler=handler)

    api = commands.add_parser("demo-api", help="serve the bundled external API (deterministic IDs)")
    api.add_argument("--port", type=int, default=DEMO_API_PORT, help=f"port on 127.0.0.1 (default {DEMO_API_PORT})")
    api.add_argument("--count", type=int, default=100_000, help="IDs served by GET /ids (default 100000)")
    api.add_argument("--pagination", choices=PAGINATIONS, default="none", help="the response shape (default none)")
    api.add_argument("--page-size", type=int, default=1000, help="items per page when paged (default 1000)")
    api.add_argument("--objects", action="store_true", help='items as {"id": …, "seq": n} instead of strings')
    api.add_argument("--item-bytes", type=int, default=0, metavar="N", help="pad each ID to N characters")
    faults = api.add_argument_group("fault modes", "applied to every K-th request (--fail-every, default 1: all)")
    faults.add_argument("--fail-every", type=int, default=1, metavar="K", help="which requests misbehave")
    faults.add_argument("--fail-status", type=int, choices=(429, 500, 502, 503), help="answer this error status")
    faults.add_argument("--retry-after", type=float, metavar="SECONDS", help="with --fail-status: send Retry-After")
    faults.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="wait before answering")
    faults.add_argument("--truncate", action="store_true", help="cut the body short")
    faults.add_argument("--non-json", action="store_true", help="answer an HTML page instead of JSON")
    faults.add_argument("--foreign-next", action="store_true", help="next links point to another host")
    faults.add_argument("--error-body", type=int, default=0, metavar="BYTES", help="with --fail-status: a long body")
    faults.add_argument("--trickle", type=float, default=0.0, metavar="SECONDS", help="send the body byte by byte")
    faults.add_argument("--nested", type=int, default=0, metavar="DEPTH", help="items nested DEPTH arrays deep")
    faults.add_argument("--gzip-bomb", type=int, default=0, metavar="BYTES", help="gzip inflating to BYTES")
    api.set_defaults(handler=_demo_api)

    table = commands.add_parser("settings-table", help="print the README's settings table (from core/settings.py)")
    table.set_defaults(handler=lambda args: print(settings_table(), end="") or 0)

    demo = commands.add_parser("demo", help="start Azurite and the demo API, ingest COUNT IDs, check the queue")
    demo.add_argument("--count", type=int, default=100_000, help="IDs to ingest (default 100000)")
    demo.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    demo.set_defaults(handler=_demo)
    return parser


def _run_id(value: str) -> str:
    if not is_run_id(value):
        raise argparse.ArgumentTypeError(RUN_ID_RULE)
    return value


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    body = {"source": args.source, "chunk_size": args.chunk_size, "run_id": args.run_id}
    try:
        request = parse_ingestion_request(
            json.dumps({k: v for k, v in body.items() if v is not None}).encode(), settings
        )
    except RequestError as exc:
        raise FanoutError(exc.detail) from None
    summary = asyncio.run(_run_and_close(settings, request))
    _print_summary(summary, as_json=args.json)
    return 0 if summary.state == "completed" else 1


async def _run_and_close(settings: Settings, request: IngestionRequest) -> RunSummary:
    print(f"run_id: {request.run_id}", flush=True)
    started = time.monotonic()
    try:
        status = await run_pipeline(await app_context(settings), request, _progress_printer())
    finally:
        await close_storage_clients()
    return RunSummary.of(status, time.monotonic() - started)


def _resume(args: argparse.Namespace) -> int:
    async def resume() -> RunSummary:
        started = time.monotonic()
        try:
            status = await resume_run(await app_context(), args.run_id, _progress_printer())
        finally:
            await close_storage_clients()
        return RunSummary.of(status, time.monotonic() - started)

    summary = asyncio.run(resume())
    _print_summary(summary, as_json=args.json)
    return 0 if summary.state == "completed" else 1


def _redrive(args: argparse.Namespace) -> int:
    async def redrive() -> RedriveResult:
        try:
            ctx = await app_context()
            if await ctx.runs.get(args.run_id) is None:
                raise RunNotFoundError(f"no run {args.run_id!r}")
            return await redrive_run(ctx, args.run_id)
        finally:
            await close_storage_clients()

    result = asyncio.run(redrive())
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"{result.run_id}: {len(result.chunks)} chunks redriven, {result.messages_queued:,} messages queued")
        for chunk in result.chunks:
            print(f"  chunk {chunk.index}: {chunk.state}, {chunk.queued:,} queued {chunk.error or ''}")
    return 0 if result.failed == 0 else 1


def _status(args: argparse.Namespace) -> int:
    async def load() -> RunStatus | None:
        try:
            return await run_status((await app_context()).runs, args.run_id)
        finally:
            await close_storage_clients()

    status = asyncio.run(load())
    if status is None:
        raise RunNotFoundError(f"no run {args.run_id!r}")
    if args.json:
        print(json.dumps(status.to_json()))
    else:
        chunks, messages = status.chunks, status.messages
        print(f"{status.run_id}: {status.state}")
        print(f"  chunks: {chunks.ingested}/{chunks.total} ingested, {chunks.failed} failed")
        print(f"  messages: {messages.enqueued}/{messages.fetched} enqueued")
        for line in [status.error] + [f"chunk {c.index}: {c.error}" for c in status.failed_chunks]:
            if line:
                print(f"  error: {line}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    async def purge() -> PurgeResult:
        try:
            return await purge_run(await app_context(), args.run_id)
        finally:
            await close_storage_clients()

    result = asyncio.run(purge())
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"{result.run_id}: purged {result.chunk_blobs} chunk blobs, {result.run_blobs} run blobs and "
              f"{result.claim_checks_deleted} claim-check blobs")  # fmt: skip
        if result.claim_checks_kept:
            print(f"  kept {result.claim_checks_kept} claim-check blobs younger than the messages' TTL")
    return 0


def _demo_api(args: argparse.Namespace) -> int:
    faults = Faults(
        every=args.fail_every, status=args.fail_status, retry_after=args.retry_after, delay=args.delay,
        truncate=args.truncate, non_json=args.non_json, foreign_next=args.foreign_next, trickle=args.trickle,
        nested=args.nested, gzip_bomb=args.gzip_bomb, error_body=args.error_body,
    )  # fmt: skip
    api = DemoApi(args.count, args.port, faults, pagination=args.pagination, page_size=args.page_size,
                  objects=args.objects, item_bytes=args.item_bytes)  # fmt: skip
    print(f"demo API serving {args.count:,} IDs at {api.url} (pagination: {args.pagination})", flush=True)
    try:
        api.serve_forever()
    finally:
        api.stop()
    return 0


def _demo(args: argparse.Namespace) -> int:
    azurite = start_azurite()
    api = DemoApi(count=args.count).start()
    print(f"Azurite on ports {azurite.blob_port}/{azurite.queue_port}, demo API at {api.url}", file=sys.stderr)
    try:
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string, "SOURCE_URL": api.url}
        settings = Settings.from_env(_without_identity(env))
        request = IngestionRequest(source="default", chunk_size=settings.chunk_size, run_id=new_run_id())
        summary = asyncio.run(_demo_run(settings, request))
    finally:
        api.stop()
        azurite.close()
    summary = replace(summary, queue_matches_source=summary.queue_length == args.count)
    _print_summary(summary, as_json=args.json)
    return 0 if summary.state == "completed" and summary.queue_matches_source else 1


async def _demo_run(settings: Settings, request: IngestionRequest) -> RunSummary:
    summary = await _run_and_close(settings, request)
    try:
        return replace(summary, queue_length=await queue_length(await app_context(settings)))
    finally:
        await close_storage_clients()


def _without_identity(env: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if not key.startswith("AzureWebJobsStorage__")}


@dataclass(frozen=True)
class RunSummary:
    """The one-line summary a local run ends with (`--json`)."""

    run_id: str
    state: str
    chunks: int | None
    messages_fetched: int | None
    messages_enqueued: int
    seconds: float
    messages_per_second: int | None
    error: str | None
    send_retries: int = 0  # Put Message calls retried: storage throttled (503), timed out or broke a connection
    queue_length: int | None = None  # `demo` only: what the queue holds afterwards
    queue_matches_source: bool | None = None

    @classmethod
    def of(cls, status: RunStatus, seconds: float) -> RunSummary:
        enqueued = status.messages.enqueued
        return cls(
            run_id=status.run_id,
            state=status.state,
            chunks=status.chunks.total,
            messages_fetched=status.messages.fetched,
            messages_enqueued=enqueued,
            seconds=round(seconds, 2),
            messages_per_second=round(enqueued / seconds) if seconds else None,
            error=status.error or next((c.error for c in status.failed_chunks), None),
            send_retries=status.messages.send_retries,
        )

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if not key.startswith("queue_") or value is not None}


def _print_summary(summary: RunSummary, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_json()), flush=True)
        return
    print(f"{summary.run_id}: {summary.state}")
    print(f"  {summary.messages_enqueued:,} messages enqueued from {summary.chunks} chunks")
    print(f"  {summary.seconds} s, {summary.messages_per_second} messages/s, {summary.send_retries:,} sends retried")
    if summary.queue_length is not None:
        print(f"  queue holds {summary.queue_length:,} messages")
    if summary.error:
        print(f"  error: {summary.error}")


def _progress_printer() -> Progress | None:
    if not sys.stderr.isatty():
        return None

    def show(line: str) -> None:
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)

    return show
