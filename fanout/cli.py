"""`python -m fanout`: run the pipeline, watch a run, serve the demo API, or run the whole demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from azure.core.exceptions import AzureError

from chunking.request import parse_ingestion_request
from core.context import Context, app_context
from core.contract import RUN_ID_RULE, is_run_id
from core.errors import FanoutError, RequestError
from core.redact import public_reason
from core.settings import DEMO_API_PORT, MAX_CHUNK_SIZE, Settings
from core.status import STATES, RunStatus
from core.storage import close_storage_clients
from fanout.demo import run_demo
from fanout.demo_api import PAGINATIONS, DemoApi, Faults
from fanout.serve import run_server
from fanout.settings_table import settings_table
from fanout.watch import watch_run
from runs.cancel import cancel_run
from runs.listing import DEFAULT_LIMIT, MAX_LIMIT, list_runs, parse_list_query
from runs.local import MAX_PARALLEL, Progress, default_parallel, resume_here, run_here
from runs.purge import purge_run
from runs.redrive import redrive_run
from runs.status import get_status

FUNCTION_KEY_ENV = "FANOUT_FUNCTION_KEY"
T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except FanoutError as exc:
        print(f"error: {public_reason(str(exc))}", file=sys.stderr)
        return 2
    except AzureError as exc:  # storage unreachable, or refusing: its reason, not a traceback
        print(f"error: storage failed: {type(exc).__name__}: {public_reason(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fanout", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="chunk the configured source and ingest every chunk, in this process")
    run.add_argument("--source", help="a configured source name (default: the SOURCE_URL source)")
    run.add_argument("--chunk-size", type=int, help=f"IDs per chunk, 1..{MAX_CHUNK_SIZE} (default: CHUNK_SIZE; in "
                     "batches CHUNK_SIZE x batch_max_items, at most that)")  # fmt: skip
    run.add_argument("--run-id", help="an id for the run (default: a new one)")
    run.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    run.add_argument(
        "--max-failed-chunks",
        type=int,
        metavar="N",
        help="failed chunks the run tolerates and still completes (default: TOLERATED_FAILED_CHUNKS)",
    )
    run.add_argument(
        "--max-concurrency",
        type=int,
        metavar="N",
        help="chunks of the run ingested at once, by anyone; 0: no cap (default: RUN_MAX_CONCURRENCY)",
    )
    run.add_argument("--max-failed-percent", type=int, metavar="P",
                     help="failed chunks tolerated in percent of the run's chunks, 0-100 (default: "
                          "TOLERATED_FAILED_PERCENT)")  # fmt: skip
    _delivery_options(run)
    _parallel_option(run)
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
    _parallel_option(commands.choices["resume"])

    listing = commands.add_parser("list", help="list runs, newest first")
    listing.add_argument("--state", choices=STATES, help="only runs in this state")
    listing.add_argument("--created-after", metavar="TIME", help="only runs created after this ISO 8601 time")
    listing.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"runs shown, at most (default {DEFAULT_LIMIT})"
    )
    listing.add_argument("--json", action="store_true", help="print the runs as JSON")
    listing.set_defaults(handler=_list)

    cancel = commands.add_parser("cancel", help="cancel a run: chunking and every chunk stop at their next checkpoint")
    cancel.add_argument("run_id", metavar="RUN_ID", type=_run_id)
    cancel.add_argument("--json", action="store_true", help="print the run as JSON")
    cancel.set_defaults(handler=_cancel)

    watch = commands.add_parser(
        "watch", help="follow a run to its end; exit code 0 completed, 1 failed, 3 cancelled",
        description="Follows a run in local storage, or with --url in a deployed app, until it ends. The exit code "
        "says how: 0 completed, 1 failed, 3 cancelled (2: the watch itself failed).",
    )  # fmt: skip
    watch.add_argument("run_id", metavar="RUN_ID", type=_run_id)
    watch.add_argument("--url", help="the app's address, e.g. https://APP.azurewebsites.net (default: local storage)")
    watch.add_argument(
        "--key", help=f"the function key for --url (default: ${FUNCTION_KEY_ENV}, which stays out of ps)"
    )
    watch.add_argument(
        "--interval", type=_interval, default=2.0, help="seconds between looks unless the app says (default 2)"
    )
    watch.set_defaults(handler=_watch)

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

    serve = commands.add_parser(
        "serve", help="serve the app's HTTP routes and run its triggers here: a stand-in for `func start`",
        description="Serves every HTTP route of function_app.py on 127.0.0.1 and runs its blob, queue and timer "
        f"triggers in this process, against the configured storage. With ${FUNCTION_KEY_ENV} set, routes ask for "
        "that key as Azure asks for a function key (?code= or x-functions-key).",
    )  # fmt: skip
    serve.add_argument("--port", type=int, default=7071, help="port on 127.0.0.1 (default 7071, as func start)")
    serve.set_defaults(handler=lambda args: run_server(args.port, os.environ.get(FUNCTION_KEY_ENV)))

    table = commands.add_parser("settings-table", help="print the README's settings table (from core/settings.py)")
    table.set_defaults(handler=lambda args: print(settings_table(), end="") or 0)

    demo = commands.add_parser("demo", help="start Azurite and the demo API, ingest COUNT IDs, check the queue")
    demo.add_argument("--count", type=int, default=100_000, help="IDs to ingest (default 100000)")
    demo.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    demo.add_argument(
        "--accounts", type=int, choices=range(1, 9), default=2, metavar="K",
        help="storage accounts the queues are spread over, one Azurite each (1..8, default 2)",
    )  # fmt: skip
    _delivery_options(demo)
    demo.set_defaults(handler=_demo)
    return parser


def _parallel_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--parallel", type=_parallel, default=default_parallel(), metavar="N",
        help=f"chunks ingested at once, as the blob trigger fans out (1..{MAX_PARALLEL}, default {default_parallel()})",
    )  # fmt: skip


def _delivery_options(command: argparse.ArgumentParser) -> None:
    """The run's message shape and back-pressure (docs/messages.md), as the request's fields."""
    command.add_argument("--batch-max-items", type=int, metavar="N",
                         help="IDs a queue message carries, 1..5000 (default: MESSAGE_BATCH_MAX_ITEMS)")  # fmt: skip
    command.add_argument("--batch-max-bytes", type=int, metavar="N",
                         help="a batch message's most bytes after encoding (default: 65536)")  # fmt: skip
    command.add_argument("--batch-input", type=_json_object, metavar="JSON",
                         help="a JSON object every batch message carries")  # fmt: skip
    command.add_argument("--envelope", action=argparse.BooleanOptionalAction, default=None,
                         help="each message carries run_id and seq, or not (default: MESSAGE_ENVELOPE)")  # fmt: skip
    command.add_argument("--max-backlog", type=int, metavar="N",
                         help="wait while a target queue holds more messages than N; 0: off "
                              "(default: QUEUE_MAX_BACKLOG)")  # fmt: skip


def _delivery_fields(args: argparse.Namespace) -> dict[str, object]:
    return {
        "batch_max_items": args.batch_max_items, "batch_max_bytes": args.batch_max_bytes,
        "batch_input": args.batch_input, "envelope": args.envelope, "max_backlog": args.max_backlog,
    }  # fmt: skip


def _json_object(value: str) -> object:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def _parallel(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_PARALLEL:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_PARALLEL}, got {value[:20]!r}")
    return int(value)


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be seconds from 0.1 to 3600, got {value[:20]!r}")
    return seconds


def _run_id(value: str) -> str:
    if not is_run_id(value):
        raise argparse.ArgumentTypeError(RUN_ID_RULE)
    return value


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    body = {
        "source": args.source, "chunk_size": args.chunk_size, "run_id": args.run_id,
        "max_failed_chunks": args.max_failed_chunks, "max_concurrency": args.max_concurrency,
        "max_failed_percent": args.max_failed_percent, **_delivery_fields(args),
    }  # fmt: skip
    try:
        request = parse_ingestion_request(
            json.dumps({k: v for k, v in body.items() if v is not None}).encode(), settings
        )
    except RequestError as exc:
        raise FanoutError(exc.detail) from None
    print(f"run_id: {request.run_id}", flush=True)
    started = time.monotonic()
    status = _on_storage(lambda ctx: run_here(ctx, request, _progress_printer(), parallel=args.parallel), settings)
    return _finished(RunSummary.of(status, time.monotonic() - started), as_json=args.json)


def _resume(args: argparse.Namespace) -> int:
    started = time.monotonic()
    status = _on_storage(lambda ctx: resume_here(ctx, args.run_id, _progress_printer(), parallel=args.parallel))
    return _finished(RunSummary.of(status, time.monotonic() - started), as_json=args.json)


def _on_storage(work: Callable[[Context], Awaitable[T]], settings: Settings | None = None) -> T:
    """Runs `work` with the app's context on a loop of its own, and closes the storage clients after."""

    async def run() -> T:
        try:
            return await work(await app_context(settings))
        finally:
            await close_storage_clients()

    return asyncio.run(run())


def _finished(summary: RunSummary, *, as_json: bool) -> int:
    _print_summary(summary, as_json=as_json)
    return 0 if summary.state == "completed" else 1


def _redrive(args: argparse.Namespace) -> int:
    result = _on_storage(lambda ctx: redrive_run(ctx, args.run_id, here=True))
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"{result.run_id}: {len(result.chunks)} chunks redriven, {result.messages_queued:,} messages queued")
        for chunk in result.chunks:
            print(f"  chunk {chunk.index}: {chunk.state}, {chunk.queued:,} queued {chunk.error or ''}")
    return 0 if result.failed == 0 else 1


def _status(args: argparse.Namespace) -> int:
    status = _on_storage(lambda ctx: get_status(ctx, args.run_id))
    if args.json:
        print(json.dumps(status.to_json()))
    else:
        chunks, messages = status.chunks, status.messages
        print(f"{status.run_id}: {status.state}")
        print(f"  chunks: {chunks.ingested}/{chunks.total} ingested, {chunks.failed} failed")
        print(f"  messages: {messages.enqueued}/{messages.fetched} enqueued")
        for target, sent in status.messages_by_queue.items() if len(status.messages_by_queue) > 1 else ():
            print(f"    {target}: {sent}")
        for line in [status.error] + [f"chunk {c.index}: {c.error}" for c in status.failed_chunks]:
            if line:
                print(f"  error: {line}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    result = _on_storage(lambda ctx: purge_run(ctx, args.run_id))
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"{result.run_id}: purged {result.chunk_blobs} chunk blobs, {result.run_blobs} run blobs and "
              f"{result.claim_checks_deleted} claim-check blobs")  # fmt: skip
        if result.claim_checks_kept:
            print(f"  kept {result.claim_checks_kept} claim-check blobs younger than the messages' TTL")
    return 0


def _list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= MAX_LIMIT:
        raise FanoutError(f"--limit must be from 1 to {MAX_LIMIT}, got {args.limit}")
    params = {"state": args.state or "", "created_after": args.created_after or "", "limit": str(args.limit)}
    query = parse_list_query(params)
    page = _on_storage(lambda ctx: list_runs(ctx, query, fill=True))
    if args.json:
        runs = [status.summary() for status in page.runs]
        print(json.dumps({"runs": runs, "continuation": page.continuation, "unreadable": page.unreadable}))
        return 0
    print(f"{'RUN ID':<36} {'STATE':<10} {'CREATED':<24} {'ENQUEUED':>22} {'CHUNKS':>13}")
    for status in page.runs:
        fetched = "?" if status.messages.fetched is None else f"{status.messages.fetched:,}"
        total = "?" if status.chunks.total is None else status.chunks.total
        print(f"{status.run_id:<36} {status.state:<10} {status.created_at:<24} "
              f"{f'{status.messages.enqueued:,}/{fetched}':>22} {f'{status.chunks.ingested}/{total}':>13}")  # fmt: skip
    for run_id, why in page.unreadable.items():
        print(f"{run_id:<36} unreadable: {why}")
    if page.continuation:
        print(f"(more: --limit {min(MAX_LIMIT, args.limit * 2)} shows more)")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    status = _on_storage(lambda ctx: cancel_run(ctx, args.run_id))
    if args.json:
        print(json.dumps(status.summary()))
    else:
        print(f"{status.run_id}: {status.state}, {status.messages.enqueued:,} messages enqueued so far")
        if not status.settled:
            print(f"  chunks stop at their next checkpoint: python -m fanout watch {status.run_id}")
    return 0


def _watch(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get(FUNCTION_KEY_ENV) or None
    if args.url is None and args.key:
        raise FanoutError("--key goes with --url: without it the watch reads local storage")
    return watch_run(args.run_id, args.url, key, args.interval)


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
    print(f"demo: {args.count:,} IDs over {args.accounts} Azurite account(s), drained as they arrive", file=sys.stderr)
    try:
        status, seconds, check = run_demo(
            args.count, args.accounts, default_parallel(), _progress_printer(), _delivery_fields(args)
        )
    except RequestError as exc:
        raise FanoutError(exc.detail) from None
    summary = replace(
        RunSummary.of(status, seconds),
        queue_length=check.left_in_queues,
        queue_matches_source=check.passed,
        verification=asdict(check),
    )
    _print_summary(summary, as_json=args.json)
    return 0 if summary.state == "completed" and check.passed else 1


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
    queue_messages: int | None = None  # the messages that carried them (fewer in batches)
    queue_length: int | None = None  # `demo` only: what the queue holds afterwards
    queue_matches_source: bool | None = None
    verification: dict[str, int] | None = None  # `demo` only: what the queue-side consumers received

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
            queue_messages=status.messages.queue_messages,
        )

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None or key == "error"}


def _print_summary(summary: RunSummary, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_json()), flush=True)
        return
    print(f"{summary.run_id}: {summary.state}")
    if summary.queue_messages in (None, summary.messages_enqueued):
        enqueued = f"{summary.messages_enqueued:,} messages enqueued"
    else:  # batches: the IDs, and the queue messages that carried them
        enqueued = f"{summary.messages_enqueued:,} IDs enqueued in {summary.queue_messages:,} queue messages"
    print(f"  {enqueued} from {summary.chunks} chunks")
    print(f"  {summary.seconds} s, {summary.messages_per_second} messages/s, {summary.send_retries:,} sends retried")
    if summary.queue_length is not None:
        print(f"  queue holds {summary.queue_length:,} messages")
    if summary.verification is not None:
        check = summary.verification
        print(
            f"  received {check['received']:,} of {check['ids']:,} IDs: {check['missing']:,} missing, "
            f"{check['duplicates']:,} duplicates (bound {check['duplicate_bound']:,}), {check['foreign']:,} foreign, "
            f"{check['misplaced']:,} out of place: " + ("verified" if summary.queue_matches_source else "NOT verified")
        )
    if summary.error:
        print(f"  error: {summary.error}")


def _progress_printer() -> Progress | None:
    if not sys.stderr.isatty():
        return None

    def show(line: str) -> None:
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)

    return show
