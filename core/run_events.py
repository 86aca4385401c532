"""Fan-in: when a run settles (`completed`, `failed` or `cancelled`, nothing still sending), one event
lands on RUN_EVENTS_QUEUE, however many invocations finish at the same moment.

Whoever notices first writes the run's completion mark (if-none-match: one writer wins, the mark says
`sending`), sends the event, then marks it `sent` at once, before anything slow; when sending fails it takes
the mark back and raises, so the invocation's retry sends it. An invocation that dies in between (a killed
process, a lost instance) leaves a mark `sending`, or none at all: the sweeper sends those events
(`send_lost_event`). Invariant: the queue event is sent at least once whatever dies when, and exactly once
unless its sender died between the send and `sent`, or took longer than SWEEP_STALE_SECONDS from the mark to
`sent` (two storage calls), when a sweep takes it over and sends it again. Nothing else lies in that window:
the webhook comes after `sent`. Every chunk outcome, the end of chunking and a cancel call `settle_run`; it
also stops a run whose failed chunks went past its tolerance, which the other chunks notice at their next
checkpoint.

With RUN_EVENTS_WEBHOOK set, the event also goes there as a CloudEvent (core/webhook.py): a step of its own,
with its own state on the mark. The write that says `sent` also says the first delivery is under way
(`pending`, counted, and when it started: `webhook_started`); its deliverer then records the outcome in its
place. The sweeper delivers a `pending` event again, one delivery a sweep, until RUN_EVENTS_WEBHOOK_DELIVERIES
(deliveries whose deliverer died count), then records it `undelivered`. Invariant: at most one delivery of an
event is under way at a time, each at most RUN_EVENTS_WEBHOOK_ATTEMPTS `POST`s. A delivery ends within
`WebhookConfig.delivery_seconds` of its start (core/webhook.py cuts it off there), and a sweep starts one only
when none is under way, or the one under way started more than `delivery_seconds` + CLOCK_SKEW_SECONDS ago (its
deliverer died); it claims it by writing its start over the mark's ETag, so of two sweeps one delivers. The
webhook never holds up the queue event, nor changes the run's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.context import Context
from core.redact import public_text
from core.run_store import EventMark, utc_now
from core.status import RunStatus, WebhookDelivery, run_status
from core.storage import trigger_queue
from core.webhook import deliver

log = logging.getLogger(__name__)
EVENT_MAX_BYTES = 48 * 1024  # a queue message takes 64 KiB after base64 (which adds a third)
ERROR_CHARS = 300
CLOCK_SKEW_SECONDS = 5.0  # between a deliverer's clock (its start on the mark) and a sweep's


def run_event(status: RunStatus, finished_at: str) -> dict[str, Any]:
    """The event: the run's id, final state, counts, timestamps and failed chunks, always under
    EVENT_MAX_BYTES: every text in it is cut to ERROR_CHARS, and failed chunks are listed, in order, while
    they fit: with their errors, else their indexes only (`failed_chunks_truncated` says which)."""
    event: dict[str, Any] = {
        "run_id": status.run_id, "state": status.state, "chunks": asdict(status.chunks),
        "messages": asdict(status.messages), "error": _cut(status.error), "max_failed_chunks": status.max_failed_chunks,
        "max_failed_percent": status.max_failed_percent,
        "created_at": status.created_at, "chunked_at": status.chunked_at, "completed_at": status.completed_at,
        "cancelled_at": status.cancelled_at, "finished_at": finished_at, "failed_chunks": [],
        "failed_chunks_truncated": False,
    }  # fmt: skip
    room = EVENT_MAX_BYTES - len(_encoded(event))
    with_errors = [{"index": chunk.index, "error": _cut(chunk.error) or ""} for chunk in status.failed_chunks]
    listed = _fitting(with_errors, room)
    if len(listed) < len(with_errors):
        listed = _fitting([{"index": chunk.index} for chunk in status.failed_chunks], room)
        event["failed_chunks_truncated"] = True
    event["failed_chunks"] = listed
    return event


def _encoded(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode("utf-8")


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:ERROR_CHARS]


def _fitting(entries: list[dict[str, Any]], room: int) -> list[dict[str, Any]]:
    """The first entries whose JSON, as list elements, takes at most `room` bytes."""
    used = 0
    for count, entry in enumerate(entries):
        used += len(_encoded(entry)) + 2  # and ", " between elements
        if used > room:
            return entries[:count]
    return entries


@dataclass(frozen=True)
class Settlement:
    """What `settle_run` found and did."""

    status: RunStatus | None  # as seen; None: no such run
    sent_event: bool = False  # this call sent the run's completion event


async def settle_run(ctx: Context, run_id: str, *, deadline: float | None = None, ending: bool = False) -> Settlement:
    """Stops a run past its failure tolerance, and sends its completion event if it has settled (or is `ending`:
    purged whatever its chunks) and no one has sent it; its webhook delivery cut off at `deadline` (a
    `time.monotonic()` instant; None: its own)."""
    status = await run_status(ctx.runs, run_id, with_errors=False)
    if status is None:
        return Settlement(None)
    if status.state == "failed" and status.tolerance_exceeded:  # a cancelled run is `cancelled`, never this
        await ctx.runs.stop(run_id, "failed")
    if not (status.settled or ending) or status.finished_at is not None:
        return Settlement(status)
    status = await run_status(ctx.runs, run_id)  # with the failed chunks' errors, for the event
    if status is None or not (status.settled or ending):
        return Settlement(status)
    event = run_event(status, utc_now())
    etag = await ctx.runs.mark_event(run_id, _encoded(event))
    if etag is None:
        return Settlement(status)  # another invocation sent it
    current = await ctx.runs.get(run_id)
    if current is not None and current.created_at != status.created_at:  # purged as it settled, and a new run
        await ctx.runs.unmark_event(run_id, etag)  # the mark is not the new run's, whose own it is to write
        return Settlement(None)
    # (being purged, or purged with no new run: the event is still this run's, owed; a purge saw it marked)
    try:
        await _enqueue(ctx, _encoded(event))
    except BaseException:
        with contextlib.suppress(Exception):
            await ctx.runs.unmark_event(run_id, etag)
        raise
    await _sent(ctx, run_id, etag, event, deadline)
    log.info("run %s %s: %d messages enqueued; event sent", run_id, status.state, status.messages.enqueued)
    return Settlement(replace(status, finished_at=event["finished_at"]), sent_event=True)


async def send_lost_event(ctx: Context, run_id: str, now: float, deadline: float | None = None) -> bool:
    """The sweeper's part of the fan-in, for a run that settled and has been quiet for SWEEP_STALE_SECONDS:
    sends its completion event if its mark is still `sending` that long after it was written (its sender
    died before it could send, or before it could say so), or marks and sends it if nobody did (every
    finisher died before settling the run); else delivers it to the webhook again if that is due
    (`_deliver_again`), a delivery cut off at the sweep's `deadline`. True when it sent the event."""
    mark = await ctx.runs.event_mark(run_id)
    if mark is None:
        return (await settle_run(ctx, run_id, deadline=deadline)).sent_event
    if not mark.sending:
        await _deliver_again(ctx, run_id, mark, now, deadline)
        return False
    if now - mark.marked_at < ctx.settings.sweep_stale_seconds:
        return False
    return await _take_over(ctx, run_id, mark, "the sweep", deadline)


async def send_unsent_event(ctx: Context, run_id: str) -> bool:
    """Before a purge deletes a run and its mark, the one thing a sweep sends a lost event from: sends the
    event unless its mark says `sent`, taking a `sending` one over at once (it may go twice then, never not at
    all), or making it if none was (a failed run with chunks left: its end is now). True when it sent it."""
    mark = await ctx.runs.event_mark(run_id)
    if mark is None:
        return (await settle_run(ctx, run_id, ending=True)).sent_event
    return mark.sending and await _take_over(ctx, run_id, mark, "the purge", None)


async def _take_over(ctx: Context, run_id: str, mark: EventMark, by: str, deadline: float | None) -> bool:
    """Sends the event a `sending` mark holds, once the mark is taken over (ETag-guarded); False when another
    took it over, or its sender marked it sent, meanwhile."""
    taken = await ctx.runs.take_over_event(run_id, mark.etag)
    if taken is None:
        return False
    event, etag = taken
    await _enqueue(ctx, event)  # failing, the mark stays `sending`: a sweep SWEEP_STALE_SECONDS on tries again
    await _sent(ctx, run_id, etag, json.loads(event), deadline)
    log.warning("run %s: its completion event was marked but never confirmed sent; %s sent it", run_id, by)
    return True


async def _enqueue(ctx: Context, event: bytes) -> None:
    queue = await trigger_queue(ctx.clients.queues, ctx.settings.storage, ctx.settings.run_events_queue)
    await queue.send_message(event.decode("utf-8"))


async def _sent(ctx: Context, run_id: str, etag: str, event: dict[str, Any], deadline: float | None) -> None:
    """The event is on its queue: says so on the mark (`sent`, no sweep sends it again), with the webhook's first
    delivery under way in the same write, then makes that delivery. Failing to write `sent`, it delivers nothing:
    the mark is a sweep's that took it over, or stays `sending` for one to take over; that sweep delivers."""
    delivery = _starting(ctx, None)
    try:
        etag_now = await _claim(ctx, run_id, etag, delivery)
    except Exception as exc:  # the event is out: the invocation has nothing left to retry
        log.warning("run %s: completion event sent, but not marked so (%s: %s); a sweep may send it again",
                    run_id, type(exc).__name__, public_text(str(exc), 300))  # fmt: skip
        return
    if etag_now is None:
        log.warning("run %s: completion event sent, but its mark was taken over by a sweep or deleted by a redrive "
                    "or purge meanwhile; it may arrive twice", run_id)  # fmt: skip
    elif delivery is not None:
        await _deliver(ctx, run_id, etag_now, event, delivery, deadline)


def _starting(ctx: Context, before: WebhookDelivery | None) -> WebhookDelivery | None:
    """The delivery about to start after `before`'s (None: there is no webhook): `pending`, counted already, so
    that deliveries whose deliverer dies count towards RUN_EVENTS_WEBHOOK_DELIVERIES too."""
    if ctx.settings.webhook.url is None:
        return None
    return WebhookDelivery("pending", (before.deliveries if before else 0) + 1, "under way")


async def _claim(ctx: Context, run_id: str, etag: str, delivery: WebhookDelivery | None) -> str | None:
    """Marks the event sent with `delivery` under way from now, over `etag` only: the new ETag, or None."""
    if delivery is None:
        return await ctx.runs.mark_sent(run_id, etag)
    return await ctx.runs.mark_sent(run_id, etag, delivery.to_metadata(), started=time.time())


async def _deliver(
    ctx: Context, run_id: str, etag: str, event: dict[str, Any], delivery: WebhookDelivery, deadline: float | None
) -> None:
    """Makes `delivery` (its start on the mark `etag` names) and records its outcome there; `pending` turns
    `undelivered` at RUN_EVENTS_WEBHOOK_DELIVERIES. Never raises: the queue event is out already."""
    config = ctx.settings.webhook
    try:
        async with asyncio.timeout(None if deadline is None else max(0.0, deadline - time.monotonic())):
            outcome = await deliver(config, event, ctx.settings.network)
        state, reason = outcome.state, outcome.reason
    except TimeoutError:  # the sweep's time budget ran out: the next sweep delivers it again
        state, reason = "pending", "cut off at the end of the sweep's SWEEP_TIME_BUDGET"
    except Exception as exc:  # an identity that gives no token, say
        state, reason = "pending", f"{type(exc).__name__}: {public_text(str(exc), 200)}"
    count = delivery.deliveries
    if state == "pending" and count >= config.deliveries:
        state, reason = "undelivered", f"{reason}; gave up after {count} deliveries"
    level = logging.INFO if state == "delivered" else logging.WARNING
    log.log(level, "run %s: completion event to the webhook: %s (%s, delivery %d)", run_id, state, reason, count)
    reason = re.sub(r"[^\x20-\x7e]", "?", reason)  # it goes into a header
    await _record(ctx, run_id, etag, WebhookDelivery(state, count, reason))


async def _deliver_again(ctx: Context, run_id: str, mark: EventMark, now: float, deadline: float | None) -> None:
    """The sweeper's delivery of an event whose webhook delivery is `pending`, one a sweep: only when none is under
    way, or the one under way started more than `delivery_seconds` + CLOCK_SKEW_SECONDS before `now` (it would
    have ended by then: its deliverer died). It claims the delivery on the mark first: of two sweeps, one
    delivers."""
    before = WebhookDelivery.from_metadata(mark.webhook)
    delivery, config = _starting(ctx, before), ctx.settings.webhook
    if before is None or before.state != "pending":
        return
    if delivery is None:  # the operator turned the webhook off since: nothing will deliver it
        reason = f"{before.reason}; RUN_EVENTS_WEBHOOK is no longer set"
        await _record(ctx, run_id, mark.etag, replace(before, state="undelivered", reason=reason))
        return
    started = mark.webhook_started
    if started is not None and now - started < config.delivery_seconds + CLOCK_SKEW_SECONDS:
        return  # its deliverer may still be at it
    if before.deliveries >= config.deliveries:  # the last one's deliverer died, or the limit was lowered since
        said = f"delivery {before.deliveries} never ended" if started is not None else before.reason
        reason = f"{said}; gave up after {before.deliveries} deliveries"
        await _record(ctx, run_id, mark.etag, replace(before, state="undelivered", reason=reason))
        return
    record = await ctx.runs.event_record(run_id)
    etag = await _claim(ctx, run_id, mark.etag, delivery) if record is not None else None
    if record is None or etag is None:
        return  # another sweep claimed it, or the mark changed meanwhile
    event = {key: value for key, value in record.items() if key != "webhook"}
    await _deliver(ctx, run_id, etag, event, delivery, deadline)


async def _record(ctx: Context, run_id: str, etag: str, delivery: WebhookDelivery) -> None:
    """Records a delivery's outcome on the mark, over `etag` only (the mark as its start left it)."""
    try:
        if not await ctx.runs.mark_sent(run_id, etag, delivery.to_metadata()):
            log.warning("run %s: the webhook delivery's outcome was not recorded: the mark changed meanwhile (a "
                        "redrive or purge deleted it, or a sweep took over a delivery past its time)",
                        run_id)  # fmt: skip
    except Exception as exc:  # a sweep delivers it again once its time is past
        log.warning("run %s: the webhook delivery's outcome was not recorded (%s: %s)",
                    run_id, type(exc).__name__, public_text(str(exc), 300))  # fmt: skip
