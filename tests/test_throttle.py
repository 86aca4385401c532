"""`max_concurrency` caps the chunk invocations ingesting one run at once; a chunk that finds no slot
goes back on the redrive queue for later and is never lost."""

from __future__ import annotations

import asyncio
import os
import time

import azure.functions as func

from api.http import PROBLEM_JSON
from core.context import app_context
from fanout.demo_api import demo_ids
from ingestion import invocation
from ingestion.slots import hold, slot_states, take_slot
from testkit.chunked_runs import delivered
from testkit.cli_runner import cli
from testkit.http_requests import body_of, post_ingestion, run_queued


def start(on_loop, functions, monkeypatch, run_id: str, count: int, **body) -> None:
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", str(count)))
    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 100, **body})))
    assert answer.status_code == 202, answer.get_body()


def test_chunks_over_the_cap_wait_on_the_redrive_queue_and_all_arrive_once(
    on_loop, functions, probe, monkeypatch, app_env
):
    monkeypatch.setenv("THROTTLE_RETRY_SECONDS", "1")
    start(on_loop, functions, monkeypatch, "capped", 300, max_concurrency=1)
    ctx = on_loop(app_context())
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    held = on_loop(take_slot(runs, "capped", 1, "a-slow-invocation", lease_seconds=600))  # the run's one slot

    for name in probe.chunk_names("capped"):  # three trigger calls: none may start
        on_loop(functions["ingest_chunk"](delivered(probe, name)))

    assert probe.queue_length() == 0
    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])
    assert redrives.get_queue_properties().approximate_message_count == 3  # handed back, hidden for a second
    on_loop(held.set_lease(0.0))  # the slow invocation ends
    time.sleep(1.2)
    assert run_queued(on_loop, functions["redrive_chunk"], redrives) == 3
    assert sorted(probe.drain()) == sorted(demo_ids(300))
    assert all(state.lease_until == 0 for state in on_loop(slot_states(runs, "capped")).values())  # slots freed


def test_racing_invocations_of_a_capped_run_never_ingest_more_chunks_at_once_than_the_cap(
    on_loop, functions, probe, monkeypatch, app_env
):
    monkeypatch.setenv("THROTTLE_RETRY_SECONDS", "1")
    start(on_loop, functions, monkeypatch, "raced", 600, max_concurrency=2)
    names = probe.chunk_names("raced")
    sending, peak = 0, 0
    real_ingest = invocation.ingest_chunk

    async def measured_ingest(*args, **kwargs):
        nonlocal sending, peak
        sending += 1
        peak = max(peak, sending)
        try:
            await asyncio.sleep(0.2)  # long enough that uncapped invocations would overlap
            return await real_ingest(*args, **kwargs)
        finally:
            sending -= 1

    monkeypatch.setattr(invocation, "ingest_chunk", measured_ingest)

    async def all_at_once() -> None:
        await asyncio.gather(*(functions["ingest_chunk"](delivered(probe, name)) for name in names))

    on_loop(all_at_once())
    time.sleep(1.2)
    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])
    for _ in range(6):  # the handed-back chunks, again all at once, until none is left
        messages = list(redrives.receive_messages(max_messages=32))
        if not messages:
            break
        for message in messages:
            redrives.delete_message(message)

        async def again(batch=messages) -> None:
            redrive = functions["redrive_chunk"]
            await asyncio.gather(*(redrive(func.QueueMessage(body=m.content.encode())) for m in batch))

        on_loop(again())
        time.sleep(1.2)

    assert peak == 2  # six chunks raced; two ingested at once, never more
    assert sorted(probe.drain()) == sorted(demo_ids(600))


def test_a_slot_renewal_that_fails_neither_ends_renewing_nor_the_invocation_and_the_slot_is_freed(
    on_loop, probe, app_env
):
    ctx = on_loop(app_context())
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    slot = on_loop(take_slot(runs, "renewed", 1, "me", lease_seconds=0.6))
    failures = [TimeoutError("storage timed out on renewal")]
    real_set_lease = slot.set_lease

    async def flaky_set_lease(lease_until: float) -> bool:
        if lease_until > 0 and failures:
            raise failures.pop()
        return await real_set_lease(lease_until)

    slot.set_lease = flaky_set_lease  # type: ignore[method-assign]
    leases = []

    async def work() -> str:
        async with hold(slot, lease_seconds=0.6):
            for _ in range(6):
                await asyncio.sleep(0.2)
                leases.append((time.time(), (await slot_states(runs, "renewed"))[0].lease_until))
        return "sent"

    assert on_loop(work()) == "sent"  # the failed renewal did not replace the body's outcome
    assert not failures and len({lease for _, lease in leases}) > 1  # renewed after the failure
    assert all(lease > seen for seen, lease in leases)  # the lease never ran out while the body ran
    assert on_loop(slot_states(runs, "renewed"))[0].lease_until == 0  # freed at the end


def test_max_concurrency_must_be_a_whole_number_up_to_1000(on_loop, functions, app_env):
    for bad in [-1, 1001, "2", 1.5, True]:
        answer = on_loop(functions["start_ingestion"](post_ingestion({"max_concurrency": bad})))
        assert (answer.status_code, answer.mimetype) == (400, PROBLEM_JSON)
        assert body_of(answer)["field"] == "max_concurrency"


def test_cli_run_keeps_the_cap_and_tolerance_asked_and_refuses_a_bad_one(on_loop, probe, app_env, monkeypatch):
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "300"))
    done = cli("run", "--run-id", "cli-capped", "--chunk-size", "100", "--max-concurrency", "1",
               "--max-failed-chunks", "2", "--parallel", "4", "--json", env={})  # fmt: skip
    bad = cli("run", "--max-failed-chunks", "-1", env={})

    assert done.returncode == 0, done.stderr
    record = on_loop(on_loop(app_context()).runs.get("cli-capped"))
    assert (record.max_concurrency, record.max_failed_chunks) == (1, 2)
    assert sorted(probe.drain()) == sorted(demo_ids(300))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "max_failed_chunks" in bad.stderr and "-1" in bad.stderr
