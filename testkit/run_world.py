"""One run driven through the app's own functions as the Functions host drives them, under a schedule of
things going wrong: invocations killed mid-way, deliveries doubled, an operator's cancel, redrive, purge,
resume or a chunk blob deleted at any step; then the sweeper until nothing moves.

A kill stops the invocation's event loop where it stands (it runs on a loop and thread of its own): no
line after that point runs, no `finally`, as with SIGKILL; its storage requests in flight may or may not
have landed. The host then delivers the message or blob again (a queue message, a blob trigger: at least
once, 5 tries, then poison); a killed HTTP call is simply gone. The sweeper is run with a clock an hour
ahead, so anything stale is stale at once (claims themselves keep real time).

What the world saw is kept for the invariants (tests/test_invariants.py): every text that left the app
(HTTP answers, the final status, events, log records), every message on the target queue, the kills.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from core.context import app_context
from core.storage import close_storage_clients
from runs.local import resume_here
from runs.sweep import sweep
from testkit.hostile_source import SETTINGS, HostileSource, SourceSpec
from testkit.http_requests import chunk_blob, delete_request, get_status, post_cancel, post_ingestion, post_redrive
from testkit.storage_probe import StorageProbe

INVOCATION_LIMIT = 60.0  # seconds any one invocation may take: more is a hang (invariant I4)
MAX_STEPS = 400
MAX_DELIVERIES = 5  # the host's tries of a message or blob before it gives up (poison)
SWEEP_AHEAD = 3600.0
ACTIONS = ("cancel", "redrive", "purge", "resume", "delete-chunk", "sweep")


CHECKPOINT, WINDOW = 5, 4  # INGEST_CHECKPOINT_EVERY, INGEST_CONCURRENCY: an interruption resends at most both


def world_env(connection: str, source_url: str, pagination: dict[str, str], **settings: str) -> dict[str, str]:
    """The app's settings for one world: queues and containers of its own (a sweep sees its runs only),
    leases and staleness of a second, quick retries."""
    tag = secrets.token_hex(4)
    return {
        "AzureWebJobsStorage": connection,
        "SOURCE_URL": source_url,
        **pagination,
        "CHUNK_CONTAINER": f"chunks-{tag}",
        "RUNS_CONTAINER": f"runs-{tag}",
        "QUEUE_NAME": f"ingest-{tag}",
        "CONTROL_QUEUE": f"control-{tag}",
        "REDRIVE_QUEUE": f"redrives-{tag}",
        "RUN_EVENTS_QUEUE": f"events-{tag}",
        "SOURCE_MAX_ATTEMPTS": "3",
        "SOURCE_RETRY_BASE_DELAY": "0.001",
        "SOURCE_RETRY_MAX_DELAY": "0.01",
        "INGEST_CHECKPOINT_EVERY": str(CHECKPOINT),
        "INGEST_CONCURRENCY": str(WINDOW),
        "INGEST_LEASE_SECONDS": "1",
        "SWEEP_STALE_SECONDS": "1",
        "BACKLOG_RETRY_SECONDS": "1",
        "STORAGE_MAX_RETRIES": "2",
        "STORAGE_RETRY_BACKOFF": "0.01",
        **settings,
    }


@dataclass(frozen=True)
class Schedule:
    """What goes wrong, and when: `actions` by step; `kills`: invocation number → seconds it runs before it
    is killed; `doubled`: invocation numbers whose delivery the host repeats at once."""

    actions: tuple[tuple[int, str], ...] = ()
    kills: tuple[tuple[int, float], ...] = ()
    doubled: frozenset[int] = frozenset()


@dataclass
class Seen:
    """What left the app, and what happened to it."""

    texts: list[str] = field(default_factory=list)  # HTTP answers, the final status, events, logs
    invocations: int = 0
    kills: int = 0
    slowest: float = 0.0
    purged_with: int | None = None  # the queue's length when the run was purged
    failures: list[str] = field(default_factory=list)  # invocations that raised (the host would retry)
    status: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    healed: bool = False  # the source was made healthy and the run redriven
    started: bool = False  # the POST answered (202, or 502 for a run its source failed at once)


class LogCapture(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append(self.format(record))


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Exactly `env` for the app's storage and source settings while the world runs, the rest as it was."""
    saved = dict(os.environ)
    for key in [key for key in os.environ if key.startswith(("AzureWebJobsStorage", "SOURCE_"))]:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class World:
    def __init__(
        self, functions: dict[str, Callable[..., Awaitable[Any]]], env: dict[str, str], run_id: str,
        schedule: Schedule, heal: Callable[[], None] | None, observe_with: str | None = None,
    ) -> None:  # fmt: skip
        """`heal`: makes the source healthy, before the run, failed or cancelled, is redriven (None: left so);
        `observe_with`: the connection string the world itself reads and delivers with (default: the app's)."""
        self._functions = functions
        self._env = env
        self._run_id = run_id
        self._schedule = schedule
        self._heal = heal
        self._kills = dict(schedule.kills)
        self._actions = dict(schedule.actions)
        self.seen = Seen()
        connection = observe_with or env["AzureWebJobsStorage"]
        self._probe = StorageProbe(connection, env["QUEUE_NAME"], env.get("CHUNK_CONTAINER", "chunks"))
        self._control = _trigger_queue(connection, env["CONTROL_QUEUE"])
        self._redrives = _trigger_queue(connection, env["REDRIVE_QUEUE"])
        self._events = _trigger_queue(connection, env["RUN_EVENTS_QUEUE"])
        self._blobs = BlobServiceClient.from_connection_string(connection).get_container_client(
            env.get("CHUNK_CONTAINER", "chunks")
        )
        self._delivered: dict[str, int] = {}  # chunk blob → 1 once delivered, else minus its failed tries
        self._tries: dict[str, int] = {}  # a queue message's body → its deliveries that failed
        self._killed_loops: list[asyncio.AbstractEventLoop] = []
        self._consumes = 0  # messages a consumer takes a step: a run with a max_backlog waits on it

    def run(self, chunk_size: int, max_failed_chunks: int, **fields: Any) -> Seen:
        """`fields`: more of the start request's body (a message shape, say); with a `max_backlog`, a consumer
        takes two messages a step from the queue while the run goes on."""
        self._consumes = 2 if fields.get("max_backlog") else 0
        capture = LogCapture(self.seen.texts)
        logging.getLogger().addHandler(capture)
        try:
            with environment(self._env):
                asyncio.run(self._main({"chunk_size": chunk_size, "max_failed_chunks": max_failed_chunks, **fields}))
        finally:
            logging.getLogger().removeHandler(capture)
            self._bury_killed()
        return self.seen

    async def _main(self, fields: dict[str, Any]) -> None:
        try:
            started = await self._http("start_ingestion", post_ingestion({"run_id": self._run_id, **fields}))
            self.seen.started = started is not None and started.status_code in (202, 502)
            await self._until_still(with_schedule=True)
            status = await self._status()
            if self._heal and status.get("state") in ("failed", "cancelled") and self.seen.purged_with is None:
                self._heal()  # the operator fixed the source: the documented action is a redrive
                self.seen.healed = True
                await self._http("redrive_ingestion", post_redrive(self._run_id), killable=False)
                await self._until_still(with_schedule=False)
            self.seen.status = await self._status()
        finally:
            await close_storage_clients()
        self.seen.messages += self._probe.drain()
        self.seen.events = [json.loads(message.content) for message in _received(self._events, 3600)]
        self.seen.texts += [json.dumps(event) for event in self.seen.events]
        self.seen.texts.append(json.dumps(self.seen.status))

    async def _until_still(self, *, with_schedule: bool) -> None:
        """Delivers what the host would, one invocation a step, acting on the schedule, until two sweeps in
        a row find nothing to do."""
        quiet_sweeps = 0
        for step in range(MAX_STEPS):
            if with_schedule and step in self._actions:
                await self._act(self._actions[step])
            if self._consumes:
                self.seen.messages += self._probe.consume(self._consumes)
            if await self._deliver_one():
                quiet_sweeps = 0
                continue
            if await self._sweep():
                quiet_sweeps = 0
                continue
            quiet_sweeps += 1
            if quiet_sweeps >= 2 and not await self._claimed():
                return
            await asyncio.sleep(0.3)  # a lease a killed invocation held runs out in real time
        raise AssertionError(f"the run still moved after {MAX_STEPS} steps: something goes round for ever (I4)")

    async def _deliver_one(self) -> bool:
        for queue, function in ((self._control, "continue_chunking"), (self._redrives, "redrive_chunk")):
            messages = _received(queue, 300, most=1)
            if messages:
                message = messages[0]
                queue.delete_message(message)
                done = await self._invoke(function, func.QueueMessage(body=message.content.encode()))
                if not done:
                    self._tries[message.content] = tries = self._tries.get(message.content, 0) + 1
                    if tries < MAX_DELIVERIES:
                        queue.send_message(message.content)  # the host delivers it again; then, poison
                return True
        for name in self._chunk_names():
            times = self._delivered.get(name, 0)
            if times == 0 or (times < 0 and -times < MAX_DELIVERIES):
                try:
                    download = self._blobs.download_blob(name)
                except ResourceNotFoundError:
                    continue
                blob = chunk_blob(self._blobs.container_name, name, download.readall(), download.properties.metadata)
                done = await self._invoke("ingest_chunk", blob)
                self._delivered[name] = 1 if done else times - 1  # negative: tries so far, to try again
                return True
        return False

    async def _sweep(self) -> bool:
        """One sweep with the clock an hour ahead; True when it did something."""
        ctx = await app_context()
        report = await asyncio.wait_for(sweep(ctx, now=time.time() + SWEEP_AHEAD), INVOCATION_LIMIT)
        resumed = getattr(report, "chunking_resumed", [])  # (a sweep that predates it: tests of old code)
        return bool(report.chunks_redriven or resumed or report.events_sent or report.failed)

    async def _claimed(self) -> bool:
        """Whether a live claim (chunking's, or a chunk's) still holds the run, or a chunk waits on its backlog
        (its hand-back is due): then it is not over yet."""
        ctx = await app_context()
        record = await ctx.runs.get(self._run_id)
        now = time.time()
        if record is not None and record.leased(now):
            return True
        statuses = await ctx.runs.chunk_statuses(self._run_id)
        return any(status.leased(now) or status.waits_on_backlog for status in statuses)

    async def _act(self, action: str) -> None:
        run = self._run_id
        if action == "cancel":
            await self._http("cancel_ingestion", post_cancel(run))
        elif action == "redrive":
            await self._http("redrive_ingestion", post_redrive(run))
        elif action == "purge":
            answer = await self._http("delete_ingestion", delete_request(run))
            if answer is not None and answer.status_code == 200:
                self.seen.purged_with = len(self.seen.messages) + self._probe.queue_length()
        elif action == "resume":
            with _refused_quietly():
                await asyncio.wait_for(resume_here(await app_context(), run), INVOCATION_LIMIT)
        elif action == "delete-chunk":
            names = self._chunk_names()
            if names:
                self._blobs.delete_blob(names[len(names) // 2])
        elif action == "sweep":
            await self._sweep()

    async def _http(
        self, function: str, request: func.HttpRequest, *, killable: bool = True
    ) -> func.HttpResponse | None:
        answer = await self._invoke(function, request, killable=killable)
        return answer if isinstance(answer, func.HttpResponse) else None

    async def _status(self) -> dict[str, Any]:
        """The run's status as the app answers it (the world looking: never killed)."""
        answer = await self._http("get_ingestion_status", get_status(self._run_id), killable=False)
        return json.loads(answer.get_body()) if answer is not None and answer.status_code < 300 else {}

    async def _invoke(self, name: str, argument: Any, *, killable: bool = True) -> Any:
        """Runs one function as the host would; a falsy answer when it was killed or raised (to deliver again)."""
        number = self.seen.invocations
        self.seen.invocations += 1
        started = time.monotonic()
        try:
            if killable and number in self._kills:
                return await self._killed(name, argument, self._kills[number])
            answer = await asyncio.wait_for(self._functions[name](argument), INVOCATION_LIMIT)
            if number in self._schedule.doubled:
                await asyncio.wait_for(self._functions[name](argument), INVOCATION_LIMIT)
        except TimeoutError:
            raise AssertionError(f"{name} did not return within {INVOCATION_LIMIT:g} s (I4)") from None
        except Exception as exc:
            self.seen.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            return False
        finally:
            self.seen.slowest = max(self.seen.slowest, time.monotonic() - started)
        if isinstance(answer, func.HttpResponse):
            self.seen.texts.append(answer.get_body().decode("utf-8", "replace"))
            return answer
        return True

    async def _killed(self, name: str, argument: Any, after: float) -> bool:
        """Runs the function on a loop of its own and stops that loop `after` seconds in, wherever it is."""
        loop = asyncio.new_event_loop()
        self._killed_loops.append(loop)
        threading.Thread(target=loop.run_forever, daemon=True).start()
        future = asyncio.run_coroutine_threadsafe(self._functions[name](argument), loop)
        await asyncio.sleep(after)
        loop.call_soon_threadsafe(loop.stop)
        self.seen.kills += 1
        while loop.is_running():
            await asyncio.sleep(0.01)
        if not future.done() or future.exception() is not None:
            return False
        answer = future.result()
        if isinstance(answer, func.HttpResponse):
            self.seen.texts.append(answer.get_body().decode("utf-8", "replace"))
        return answer if answer is not None else True

    def _bury_killed(self) -> None:
        """Ends what killed invocations left frozen, as a process exit would: no line of theirs runs on."""
        for loop in self._killed_loops:
            with _refused_quietly():
                for _ in range(10):  # what a cancelled task starts on its way out is cancelled in turn
                    frozen = asyncio.all_tasks(loop)
                    if not frozen:
                        break
                    for task in frozen:
                        task.cancel()
                    loop.run_until_complete(asyncio.gather(*frozen, return_exceptions=True))
                loop.run_until_complete(close_storage_clients())
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _chunk_names(self) -> list[str]:
        return self._probe.chunk_names(self._run_id)


@contextmanager
def _refused_quietly() -> Iterator[None]:
    """An operator's command that the app refuses (a 409, a run gone) is part of the schedule, not a failure."""
    try:
        yield
    except Exception as exc:
        logging.getLogger(__name__).info("operator action refused: %s: %s", type(exc).__name__, exc)


def _trigger_queue(connection: str, name: str) -> QueueClient:
    """A queue as the host reads it for a trigger: base64 both ways."""
    return QueueClient.from_connection_string(
        connection, name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
    )


def _received(queue: QueueClient, hidden_for: int, most: int = 32) -> list[Any]:
    """Messages received from `queue` (none while it does not exist yet)."""
    try:
        return list(queue.receive_messages(max_messages=most, visibility_timeout=hidden_for))
    except ResourceNotFoundError:
        return []


NOTHING_GOES_WRONG = Schedule()


def hostile_world(
    functions: dict[str, Callable[..., Awaitable[Any]]], connection: str, spec: SourceSpec, chunk_size: int = 10,
    schedule: Schedule = NOTHING_GOES_WRONG, heals: bool = True, **settings: str,
) -> tuple[Seen, HostileSource, dict[str, str]]:  # fmt: skip
    """One run of a `HostileSource` through the app's functions until nothing moves (max_failed_chunks 0):
    what was seen, the source, and the settings the app ran with. `heals`: a run failed or cancelled is
    redriven against the source without its faults."""
    source = HostileSource(spec)
    try:
        env = world_env(connection, source.url, SETTINGS[spec.mode], **settings)
        heal = (lambda: setattr(source, "spec", spec.healthy())) if heals else None
        seen = World(functions, env, f"w-{os.urandom(3).hex()}", schedule, heal).run(chunk_size, 0)
    finally:
        source.stop()
    return seen, source, env
