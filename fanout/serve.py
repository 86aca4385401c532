"""`python -m fanout serve`: a local stand-in for the Functions host, where `func start` cannot be installed.

It serves every HTTP route of `function_app.py` through the function objects `app.get_functions()`
returns (fanout/http_host.py maps each request), and does the triggers' work in-process on the same
event loop, as the Python worker runs every `async def` function on one loop:

- blob triggers: the container is listed every `POLL_SECONDS`; each blob not yet seen (by name and etag)
  is handed over as the host hands it (its bytes, `container/name`, its metadata), `BLOB_PARALLEL` at a
  time; a failure is tried again at the next poll, `MAX_TRIES` tries in all, then logged as poison;
- queue triggers: messages read base64-decoded, invisible while handled, deleted when the function
  returns, visible again at once when it raises, and moved to `{queue}-poison` after `MAX_TRIES`
  deliveries, as the host's `maxDequeueCount` does;
- timer triggers: called on their NCRONTAB schedule (`second minute hour day month weekday`);
- a storage failure (a listing or receive that fails, storage down) is logged at warning with the trigger's
  name and polled again after a pause that doubles from `POLL_SECONDS` up to `MAX_PAUSE_SECONDS`, back to
  `POLL_SECONDS` once a poll succeeds; a message that could not be deleted, released or moved to poison
  is logged and comes back when its visibility ends (the app's checkpoints make the repeat harmless).
  No Exception ends a trigger, nor the others, nor the HTTP side.

What it has seen lives in memory: a restarted `serve` hands every chunk blob over once more, and the
ingestion's own checkpoints make that send nothing twice.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import datetime
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.timer import TimerRequest
from croniter import croniter

from core.context import Context, app_context
from core.storage import close_storage_clients
from fanout.http_host import HttpRoutes, bindings_of, call_function
from runs.local import default_parallel

POLL_SECONDS = 1.0
MAX_PAUSE_SECONDS = 30.0  # the longest pause between polls after failures in a row
MAX_TRIES = 5  # host.json's poisonBlobThreshold and maxDequeueCount
QUEUE_BATCH = 8  # host.json's queues.batchSize
VISIBILITY_SECONDS = 600  # a message is invisible while its function runs (the host renews it; 10 min is plenty here)
MAX_BODY_BYTES = 100 * 1024 * 1024  # the host's own request limit; the app checks HTTP_MAX_BODY_BYTES itself
log = logging.getLogger("fanout.serve")


def blob_input(container: str, name: str, data: bytes, metadata: dict[str, str] | None = None) -> func.InputStream:
    """A blob as the blob trigger hands it over: its bytes, its name with the container, its metadata."""
    return func.blob.InputStream(data=data, name=f"{container}/{name}", length=len(data), metadata=metadata)


class Trigger(abc.ABC):
    """A non-HTTP trigger: `poll` does one round of its work, `run` polls for ever."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """What the logs call it."""

    @abc.abstractmethod
    async def poll(self, ctx: Context) -> bool:
        """One round of work; True when more waits at once."""

    async def run(self, ctx: Context) -> NoReturn:
        """Polls until cancelled; no Exception ends it. When a poll leaves nothing waiting the next comes
        `POLL_SECONDS` later. A failed poll is logged once at warning, and the pause doubles with each failure in
        a row, up to `MAX_PAUSE_SECONDS`; a poll that succeeds brings it back to `POLL_SECONDS`."""
        pause = POLL_SECONDS
        while True:
            try:
                more = await self.poll(ctx)
            except Exception:
                log.warning("%s failed; polled again in %.0f s", self.name, pause, exc_info=True)
                await asyncio.sleep(pause)
                pause = min(2 * pause, MAX_PAUSE_SECONDS)
                continue
            pause = POLL_SECONDS
            if not more:
                await asyncio.sleep(POLL_SECONDS)


@dataclass
class BlobTrigger(Trigger):
    """Polls one container and hands each new blob to a blob-triggered function, `parallel` at a time."""

    container: str
    function: Callable[[Any], Any]
    parallel: int
    seen: set[tuple[str, str]] = field(default_factory=set)
    tries: dict[tuple[str, str], int] = field(default_factory=dict)
    _running: set[asyncio.Task[None]] = field(default_factory=set, init=False)  # hand-overs, held till done
    _slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.parallel)

    @property
    def name(self) -> str:
        return f"blob trigger on {self.container}"

    async def poll(self, ctx: Context) -> bool:
        """Lists the container once and starts handing over each blob not seen yet; False: nothing more waits.
        What it remembers is what the listing found: memory bounded by the container, not by every blob
        ever written (a purged run's are forgotten)."""
        client = ctx.clients.blobs.get_container_client(self.container)
        listed: set[tuple[str, str]] = set()
        with contextlib.suppress(ResourceNotFoundError):
            async for blob in client.list_blobs():
                seen = (blob.name, str(blob.etag))
                listed.add(seen)
                if seen not in self.seen:
                    self.seen.add(seen)
                    await self._slots.acquire()
                    task = asyncio.create_task(self._hand_over(client, seen))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
        self.seen &= listed
        self.tries = {seen: tries for seen, tries in self.tries.items() if seen in listed}
        return False

    async def _hand_over(self, client: Any, seen: tuple[str, str]) -> None:
        name = seen[0]
        try:
            download = await client.download_blob(name)
            data = await download.readall()
            await call_function(self.function, blob_input(self.container, name, data, download.properties.metadata))
        except ResourceNotFoundError:
            pass  # deleted meanwhile (a purge): nothing to hand over
        except Exception:
            self.tries[seen] = tries = self.tries.get(seen, 0) + 1
            if tries < MAX_TRIES:
                self.seen.discard(seen)  # the next poll hands it over again
                log.warning("blob %s/%s failed (try %d of %d)", self.container, name, tries, MAX_TRIES, exc_info=True)
            else:
                log.error("blob %s/%s failed %d times: poison, not tried again", self.container, name, tries)
        finally:
            self._slots.release()


@dataclass(frozen=True)
class QueueTrigger(Trigger):
    """Reads one queue and hands each message to a queue-triggered function."""

    queue: str
    function: Callable[[Any], Any]

    @property
    def name(self) -> str:
        return f"queue trigger on {self.queue}"

    async def poll(self, ctx: Context) -> bool:
        """Receives one batch and hands its messages over together; True: the batch was full, more may wait."""
        queues = ctx.clients.queues  # messages as stored: each decoded on its own, so none fails its batch
        client, poison = queues.get_queue_client(self.queue), queues.get_queue_client(f"{self.queue}-poison")
        try:
            batch = client.receive_messages(max_messages=QUEUE_BATCH, visibility_timeout=VISIBILITY_SECONDS)
            messages = [message async for message in batch]
        except ResourceNotFoundError:
            return False  # the app creates the queue when it first sends
        await asyncio.gather(*(self._hand_over(client, poison, message) for message in messages))
        return len(messages) == QUEUE_BATCH

    async def _hand_over(self, client: Any, poison: Any, message: Any) -> None:
        """Never raises, so that no message stops its batch: one that could not be deleted, made visible or
        moved to poison is logged, and comes back when its visibility ends (unless it is gone)."""
        try:
            await self._deliver(client, poison, message)
        except asyncio.CancelledError:  # serve stops: the message is visible again now, not VISIBILITY_SECONDS on
            with contextlib.suppress(Exception):
                await asyncio.shield(client.update_message(message, visibility_timeout=0))
            raise
        except Exception:
            log.warning("message %s on %s not settled: it comes back when its visibility ends", message.id,
                        self.queue, exc_info=True)  # fmt: skip

    async def _deliver(self, client: Any, poison: Any, message: Any) -> None:
        """The message's body base64-decoded, as the host's `messageEncoding` expects; one that is not base64
        fails its delivery like a function that raised, and goes to poison as it was stored."""
        try:
            body = base64.b64decode(message.content or "", validate=True)
            queued = func.QueueMessage(id=message.id, body=body, pop_receipt=message.pop_receipt)
            await call_function(self.function, queued)
        except Exception:
            if message.dequeue_count < MAX_TRIES:
                log.warning("message %s on %s failed (delivery %d of %d)", message.id, self.queue,
                            message.dequeue_count, MAX_TRIES, exc_info=True)  # fmt: skip
                await client.update_message(message, visibility_timeout=0)
                return
            log.error("message %s on %s failed %d times: moved to %s-poison", message.id, self.queue,
                      message.dequeue_count, self.queue)  # fmt: skip
            with contextlib.suppress(Exception):
                await poison.create_queue()
            await poison.send_message(message.content)
        await client.delete_message(message)


@dataclass
class TimerTrigger(Trigger):
    """Calls a timer-triggered function on its NCRONTAB schedule, counted from when the trigger was made."""

    schedule: str
    function: Callable[[Any], Any]
    _times: croniter = field(init=False)

    def __post_init__(self) -> None:
        self._times = croniter(self.schedule, datetime.datetime.now(datetime.UTC), second_at_beginning=True)

    @property
    def name(self) -> str:
        return f"timer trigger {self.schedule}"

    async def poll(self, ctx: Context) -> bool:
        """Waits for the next time and calls the function; True: the next wait begins at once."""
        due: datetime.datetime = self._times.get_next(datetime.datetime)
        await asyncio.sleep(max(0.0, (due - datetime.datetime.now(datetime.UTC)).total_seconds()))
        try:
            await call_function(self.function, TimerRequest(past_due=False, schedule={"AdjustForDST": True}))
        except Exception:
            log.error("timer %s failed; it runs again at its next time", self.schedule, exc_info=True)
        return True


def triggers_of(functions: list[Any], parallel: int) -> list[Trigger]:
    """The app's non-HTTP triggers, read from each function's bindings as the host reads them."""
    triggers: list[Trigger] = []
    for function in functions:
        user_function = function.get_user_function()
        for binding in bindings_of(function):
            if binding["type"] == "blobTrigger":
                triggers.append(BlobTrigger(binding["path"].split("/", 1)[0], user_function, parallel))
            elif binding["type"] == "queueTrigger":
                triggers.append(QueueTrigger(binding["queueName"], user_function))
            elif binding["type"] == "timerTrigger":
                triggers.append(TimerTrigger(binding["schedule"], user_function))
    return triggers


def http_app(routes: HttpRoutes) -> web.Application:
    """An aiohttp application that hands every request to `routes`."""

    async def handle(request: web.Request) -> web.Response:
        answer = await routes.answer(request.method, str(request.url), dict(request.headers), request.read)
        headers = dict(answer.headers)
        if not any(name.lower() == "content-type" for name in headers) and answer.mimetype:
            headers["Content-Type"] = f"{answer.mimetype}; charset={answer.charset or 'utf-8'}"
        return web.Response(status=answer.status_code, body=answer.get_body(), headers=headers)

    application = web.Application(client_max_size=MAX_BODY_BYTES)
    application.router.add_route("*", "/{tail:.*}", handle)
    return application


async def serve(port: int, key: str | None, ready: Callable[[str], None] = print) -> None:
    """Serves the app on 127.0.0.1:`port` and polls its triggers until cancelled: each trigger on its own,
    none of them stopped by an Exception, so no storage failure ends another trigger or the HTTP side."""
    import function_app  # reads the settings: imported once the environment is as it will stay

    functions = function_app.app.get_functions()  # may be called once per app object
    # Bodies go to the app as sent, Content-Encoding and all, as the host hands them over (it decompresses none).
    runner = web.AppRunner(http_app(HttpRoutes(functions, key)), access_log=None, auto_decompress=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ctx = await app_context()
        tasks = [asyncio.create_task(trigger.run(ctx)) for trigger in triggers_of(functions, default_parallel())]
        url = f"http://127.0.0.1:{port}/api/dashboard"
        ready(f"serving the app at http://127.0.0.1:{port}/api/ (a stand-in for `func start`)")
        ready(f"dashboard: {url}" + ("?code=<the FANOUT_FUNCTION_KEY key>" if key else ""))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await runner.cleanup()
        await close_storage_clients()


def run_server(port: int, key: str | None) -> int:
    """`python -m fanout serve`: until interrupted or terminated (SIGTERM), each ending it as cleanly."""

    async def until_stopped() -> None:
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(port, key, lambda line: print(line, flush=True))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(until_stopped())
    print("serve stopped", flush=True)
    return 0
