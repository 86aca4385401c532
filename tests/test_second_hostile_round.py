"""The second hostile round's findings, each reproduced as it was reported (each failed on the code before
the fix). The classes they belong to are checked by generated inputs in tests/test_invariants.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from azure.storage.blob import BlobServiceClient

from core.context import app_context
from core.errors import RunConflictError
from core.settings import Settings
from fanout.azurite import PROJECT_ROOT
from fanout.demo_api import DemoApi, Faults, demo_ids
from runs.cancel import cancel_run
from runs.purge import purge_run
from runs.sweep import sweep
from testkit.cli_runner import cli
from testkit.hostile_source import SETTINGS, Fault, HostileSource, SourceSpec
from testkit.http_requests import body_of, delete_request, get_status, post_ingestion, run_queued
from testkit.loopback_api import LoopbackApi
from testkit.run_world import NOTHING_GOES_WRONG, Schedule, World, environment, hostile_world, world_env
from testkit.storage_probe import StorageProbe

PIECE = 12  # no run of this many characters of a secret may leave the app
REASON_CHARS = 1000  # a run's reason is cut to this many characters
IDS = [json.dumps(f"id-{index:04d}") for index in range(300)]
HOUR = 3600.0


def world(functions, azurite, spec: SourceSpec, chunk_size: int = 10, schedule: Schedule = NOTHING_GOES_WRONG,
          heals: bool = True, **settings):  # fmt: skip
    return hostile_world(functions, azurite.connection_string, spec, chunk_size, schedule, heals, **settings)


def texts_of(ids: list[str]) -> list[str]:
    return [json.loads(text) for text in ids]


# --- 1. a reason of any length ends the run at once ----------------------------------------------------


def test_a_60000_character_reason_phrase_fails_the_run_at_once_with_its_reason_cut(functions, azurite):
    spec = SourceSpec("none", tuple(IDS), faults=(Fault(0, "status", status=404, reason_chars=60_000),))
    started = time.monotonic()
    seen, _, _ = world(functions, azurite, spec, heals=False)

    assert time.monotonic() - started < 60 and seen.slowest < 10
    assert seen.status["state"] == "failed"
    assert "answered 404 xxxxxxxx" in seen.status["error"] and len(seen.status["error"]) <= REASON_CHARS
    (event,) = seen.events
    assert event["state"] == "failed" and len(event["error"]) <= 300
    assert all(len(text) < 20_000 for text in seen.texts)  # answers, status, event and logs alike


# --- 2. an empty page that names the next one is not the end -----------------------------------------


def test_empty_pages_that_name_a_next_one_are_followed_to_the_last_item(functions, azurite):
    spec = SourceSpec("cursor", tuple(IDS), pages=(100, 0, 0, 100, 0, 100, 0))

    seen, _, _ = world(functions, azurite, spec, chunk_size=50, CHUNKING_TIME_BUDGET="0")

    assert seen.status["state"] == "completed"
    assert sorted(seen.messages) == sorted(texts_of(IDS))


def test_more_empty_pages_in_a_row_than_allowed_fail_the_run_naming_the_setting(functions, azurite):
    spec = SourceSpec("next-link", tuple(IDS[:10]), pages=(10, *[0] * 8), circle_to=None)

    seen, _, _ = world(functions, azurite, spec, heals=False, SOURCE_MAX_EMPTY_PAGES="5")

    assert seen.status["state"] == "failed"
    assert "more than SOURCE_MAX_EMPTY_PAGES=5 empty pages in a row" in seen.status["error"]
    assert sorted(seen.messages) == sorted(texts_of(IDS[:10]))


# --- 3. a chunk blob that is gone ----------------------------------------------------------------------


def test_a_chunk_blob_deleted_before_it_was_ingested_is_reported_failed_and_the_run_ends(functions, azurite):
    spec = SourceSpec("none", tuple(IDS))
    schedule = Schedule(actions=((1, "delete-chunk"),))  # after the POST, before the first blob is delivered

    seen, _, _ = world(functions, azurite, spec, chunk_size=100, schedule=schedule)

    assert seen.status["state"] == "failed", seen.status
    (failed,) = seen.status["failed_chunks"]
    assert "is gone" in failed["error"] and f"{failed['index']:06d}.jsonl" in failed["error"]
    assert len(seen.messages) == 200 and set(seen.messages) < set(texts_of(IDS))
    assert seen.events[-1]["failed_chunks"][0]["index"] == failed["index"]


# --- 4. chunking killed: the sweeper resumes it --------------------------------------------------------


def test_chunking_killed_by_sigkill_is_resumed_by_the_sweeper_and_every_id_lands(functions, on_loop, azurite):
    api = DemoApi(count=600, pagination="cursor", page_size=100, faults=Faults(delay=0.3)).start()
    env = world_env(azurite.connection_string, api.url, {**SETTINGS["cursor"], "SOURCE_CURSOR_PATH": "next_cursor"})
    probe = StorageProbe(azurite.connection_string, env["QUEUE_NAME"], env["CHUNK_CONTAINER"])
    run_id = f"killed-{os.urandom(3).hex()}"
    child = subprocess.Popen(
        [sys.executable, "-m", "testkit.chunking_child", "100", run_id], cwd=PROJECT_ROOT, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        while len(probe.chunk_names(run_id)) < 3:
            assert child.poll() is None, child.stderr.read()
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        with environment(env):
            stranded = body_of(on_loop(functions["get_ingestion_status"](get_status(run_id))))
            assert stranded["state"] == "chunking"
            time.sleep(1.1)  # its claim runs out
            report = on_loop(sweep_ahead())
            assert report.chunking_resumed == [run_id]
            control = probe.queue_client(env["CONTROL_QUEUE"])
            assert run_queued(on_loop, functions["continue_chunking"], control) == 1
            status = body_of(on_loop(functions["get_ingestion_status"](get_status(run_id))))
    finally:
        api.stop()
    assert (status["state"], status["messages"]["fetched"], status["chunks"]["total"]) == ("ingesting", 600, 6)
    lines = [line for name in probe.chunk_names(run_id) for line in probe.chunks.download_blob(name).readall().split()]
    assert [json.loads(line) for line in lines] == demo_ids(600)


async def sweep_ahead():
    ctx = await app_context()
    return await sweep(ctx, now=time.time() + HOUR)


def test_a_stranded_run_cancelled_then_redriven_carries_its_chunking_on(functions, azurite):
    spec = SourceSpec("cursor", tuple(IDS), pages=(50,) * 6)
    schedule = Schedule(actions=((1, "cancel"), (2, "redrive")), kills=((0, 0.15),))  # the POST killed mid-way

    seen, _, _ = world(functions, azurite, spec, chunk_size=50, schedule=schedule)

    assert seen.kills == 1 and seen.status["state"] == "completed", seen.status
    assert sorted(set(seen.messages)) == sorted(texts_of(IDS))


# --- 5. one item no message can carry ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "cursor"])
def test_a_lone_surrogate_fails_the_run_naming_the_item_and_a_redrive_fails_the_same_way(functions, azurite, mode):
    items = (*IDS[:5], '"x\\udc00"', *IDS[5:10])
    spec = SourceSpec(mode, items, pages=(11,) if mode == "cursor" else ())

    seen, _, _ = world(functions, azurite, spec, chunk_size=3)

    assert seen.status["state"] == "failed" and not seen.failures
    assert "item 6 ('\"x\\\\udc00\"') holds the lone surrogate \\udc00" in seen.status["error"]
    assert seen.healed  # redriven against the source as it is: the same reason, not a traceback or a 500
    assert sorted(seen.messages) == sorted(texts_of(IDS[:5]))
    assert all('"status": 500' not in text for text in seen.texts)


def test_a_surrogate_pair_is_one_character_and_ids_are_kept_as_written(functions, azurite):
    items = ('"\\ud83d\\ude00"', '"\\\\ud800"', "0.1", "0.10000000000000000001", "1e400", "-0", '"caf\\u00e9"')
    seen, _, _ = world(functions, azurite, SourceSpec("none", items))

    assert seen.status["state"] == "completed"
    assert sorted(seen.messages) == sorted(["\U0001f600", "\\ud800", "0.1", "0.10000000000000000001", "1e400", "-0",
                                            "café"])  # fmt: skip


# --- 6. a blip fails the run, which stays resumable ---------------------------------------------------


def test_a_source_down_longer_than_its_retries_fails_the_run_and_a_redrive_carries_chunking_on(functions, azurite):
    outage = tuple(Fault(at, "status", status=503) for at in range(2, 8))
    spec = SourceSpec("cursor", tuple(IDS), pages=(50,) * 6, faults=outage)

    seen, _, _ = world(functions, azurite, spec, chunk_size=25)

    assert seen.healed  # failed by the outage, then redriven once the source was back
    assert seen.status["state"] == "completed", seen.status
    assert Counter(seen.messages) == Counter(texts_of(IDS))  # every ID once: chunking went on where it stopped


# --- 7. repeats by content, across continuations --------------------------------------------------------


def test_an_api_that_ignores_the_page_asked_for_and_shuffles_fails_within_a_bounded_number_of_messages(
    functions, azurite
):
    spec = SourceSpec("page", tuple(IDS[:50]), pages=(50, 50, 50), ignores_position=True, shuffles=True)

    seen, source, _ = world(functions, azurite, spec, chunk_size=20, SOURCE_MAX_PAGES="200")

    assert seen.status["state"] == "failed" and "answered the same 50 items" in seen.status["error"]
    assert len(seen.messages) <= 50 + 100 and source.requests <= 10


def test_a_cursor_cycle_spanning_continuations_fails_within_a_bounded_number_of_messages(functions, azurite):
    spec = SourceSpec("cursor", tuple(IDS[:200]), pages=(50,) * 4, circle_to=0)  # A → B → C → D → A

    seen, _, _ = world(functions, azurite, spec, chunk_size=100, CHUNKING_TIME_BUDGET="0")

    assert seen.status["state"] == "failed" and "SOURCE_MAX_READS_PER_ITEM=2" in seen.status["error"]
    assert len(seen.messages) <= 2 * 200 + 100 + 50


# --- 8. cancel and purge while chunking ------------------------------------------------------------------


def test_purge_waits_for_chunking_to_stop_and_nothing_is_sent_or_left_after_it(app_env, azurite, on_loop):
    api = DemoApi(count=2000, pagination="cursor", page_size=100, faults=Faults(delay=3.0)).start()
    env = {**app_env, "SOURCE_URL": api.url, **SETTINGS["cursor"], "SOURCE_CURSOR_PATH": "next_cursor",
           "CHUNK_SIZE": "100", "INGEST_LEASE_SECONDS": "10"}  # fmt: skip
    probe = StorageProbe(azurite.connection_string, env["QUEUE_NAME"])
    run = subprocess.Popen(
        [sys.executable, "-m", "fanout", "run", "--run-id", "purged-mid-way"], cwd=PROJECT_ROOT,
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while len(probe.chunk_names("purged-mid-way")) < 3:
            time.sleep(0.05)
        ctx = on_loop(app_context(Settings.from_env({**os.environ, **env})))
        on_loop(cancel_run(ctx, "purged-mid-way"))  # the purge follows at once, mid-page: the chunker is still on
        with pytest.raises(RunConflictError, match="chunking has not yet stopped"):
            on_loop(purge_run(ctx, "purged-mid-way"))
        deadline = time.monotonic() + 30
        while (purged := cli("purge", "purged-mid-way", env=env)).returncode != 0:
            assert time.monotonic() < deadline, purged.stderr
            time.sleep(0.5)
        run.wait(timeout=60)
        sent = probe.queue_length()
        time.sleep(2)
    finally:
        api.stop()
        run.kill()
    assert probe.queue_length() == sent  # nothing sent for the run after its purge
    assert probe.chunk_names("purged-mid-way") == []


# --- 9. secrets, in any encoding or piece ---------------------------------------------------------------

TOKEN = "tok_8f3a9c1e5b7d2f4a6c8e0b1d"
QUOTED = 'k"ey-7c1d9e2f'


def test_a_source_quoting_pieces_of_its_secrets_leaks_none_of_them_anywhere(functions, azurite, app_env):
    spec = SourceSpec("none", tuple(IDS[:10]), faults=tuple(Fault(at, "echo", status=401) for at in range(20)))
    source = HostileSource(spec)
    try:
        url = source.url.replace("http://", "http://reader:pw-9ab8cd7ef6@")
        headers = {"Authorization": f"Bearer {TOKEN}", "x-api-key": QUOTED}
        env = world_env(azurite.connection_string, url, SETTINGS["none"], SOURCE_HEADERS=json.dumps(headers))
        seen = World(functions, env, "leaks-2", Schedule(), heal=lambda: None).run(5, 0)
        status_cli = cli("status", "leaks-2", env=env)
        run_cli = cli("run", "--run-id", "leaks-3", env=env)
    finally:
        source.stop()
    said = [*seen.texts, status_cli.stdout, status_cli.stderr, run_cli.stdout, run_cli.stderr]
    assert seen.status["state"] == "failed" and "answered 401" in seen.status["error"]
    for secret in (TOKEN, QUOTED, "pw-9ab8cd7ef6", "reader:pw-9ab8cd7ef6"):
        pieces = [secret[start : start + PIECE] for start in range(max(1, len(secret) - PIECE + 1))]
        leaked = [text[:200] for text in said for piece in pieces if piece in text]
        assert not leaked, (secret, leaked)


# --- 11. smaller ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["cut", "cut-no-length"])
def test_a_body_cut_short_with_or_without_a_length_is_read_again(functions, azurite, cut):
    seen, source, _ = world(functions, azurite, SourceSpec("none", tuple(IDS), faults=(Fault(0, cut),)))

    assert seen.status["state"] == "completed" and not seen.healed
    assert sorted(seen.messages) == sorted(texts_of(IDS)) and source.requests == 2


@pytest.mark.parametrize(
    "setting",
    [{"QUEUE_NAME": "Ingest_Queue"}, {"CHUNK_CONTAINER": "Chunks"}, {"RUNS_CONTAINER": "ab"},
     {"AzureWebJobsStorage": "nonsense"}, {"REDRIVE_QUEUE": "ingest", "QUEUE_NAME": "ingest"}],
)  # fmt: skip
def test_a_malformed_storage_setting_stops_the_cli_with_its_name_not_a_traceback(app_env, setting):
    result = cli("status", "any-run", env={**app_env, **setting})

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert next(iter(setting)) in result.stderr


def test_a_foreign_blob_among_a_runs_chunk_statuses_is_not_a_chunk(functions, on_loop, azurite):
    seen, _, env = world(functions, azurite, SourceSpec("none", tuple(IDS[:20])))
    run_id = seen.status["run_id"]
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    runs = blobs.get_container_client(env["RUNS_CONTAINER"])
    runs.upload_blob(f"{run_id}/chunks/notes.txt", b"left by hand")

    with environment(env):
        answer = on_loop(functions["get_ingestion_status"](get_status(run_id)))

    assert answer.status_code == 200 and body_of(answer)["chunks"]["ingested"] == 2


def test_a_run_with_a_chunk_gone_can_be_purged_once_it_has_ended(functions, azurite, on_loop):
    seen, _, env = world(functions, azurite, SourceSpec("none", tuple(IDS[:100])), chunk_size=25,
                         schedule=Schedule(actions=((1, "delete-chunk"),)))  # fmt: skip
    assert seen.status["state"] == "failed"

    with environment(env):
        purged = on_loop(functions["delete_ingestion"](delete_request(seen.status["run_id"])))

    assert purged.status_code == 200, purged.get_body()


# --- found by a hostile review of the fixes above ---------------------------------------------------------


def test_a_page_answered_otherwise_after_a_chunker_died_fails_the_run_where_it_diverged_losing_nothing_silently(
    functions, azurite
):
    """A chunker killed after writing chunks but before saving its progress; the source then answers its
    pages the other way round. The chunks written before are found to hold other lines: the run stops
    before the first of them, visibly, its counts those of the chunks before it (nothing skipped)."""
    spec = SourceSpec("cursor", tuple(IDS[:100]), pages=(10,) * 10, changes_after=4)
    schedule = Schedule(kills=((0, 0.6),))  # the POST, once it has written a few chunks

    seen, _, _ = world(functions, azurite, spec, chunk_size=10, schedule=schedule, heals=False,
                       SOURCE_MAX_ATTEMPTS="1")  # fmt: skip

    status = seen.status
    assert status["state"] in ("failed", "completed"), status
    if status["state"] == "failed":
        assert "was written before with other items" in status["error"] or "otherwise" in status["error"]
    assert set(seen.messages) <= set(texts_of(IDS[:100]))
    assert len(seen.messages) == len(set(seen.messages))  # and nothing twice


def test_chunk_max_bytes_changed_mid_run_does_not_change_how_the_run_is_cut(functions, azurite, on_loop):
    spec = SourceSpec("cursor", tuple(f'"{"x" * 90}-{index:03d}"' for index in range(100)), pages=(10,) * 10)
    source = HostileSource(spec)
    try:
        env = world_env(azurite.connection_string, source.url, SETTINGS["cursor"], CHUNK_MAX_BYTES="1024",
                        CHUNKING_TIME_BUDGET="0")  # fmt: skip
        run = f"cut-{os.urandom(3).hex()}"
        with environment(env):
            on_loop(functions["start_ingestion"](post_ingestion({"run_id": run, "chunk_size": 50})))
        env["CHUNK_MAX_BYTES"] = "8388608"  # the operator raises it while the run goes on
        seen = World(functions, env, run, NOTHING_GOES_WRONG, heal=None).run(50, 0)
    finally:
        source.stop()
    assert seen.status["state"] == "completed", seen.status
    assert sorted(seen.messages) == sorted(texts_of(list(spec.items)))


def test_a_cursor_too_long_for_a_continuation_fails_the_run_naming_the_bound(functions, azurite):
    spec = SourceSpec("cursor", tuple(IDS[:20]), pages=(10, 10))
    source = HostileSource(spec)
    long_cursor = "é" * 9000  # 54,000 characters as JSON: no queue message carries it
    try:
        answer = json.dumps({"items": json.loads("[" + ",".join(IDS[:10]) + "]"), "next": long_cursor})
        api = LoopbackApi(lambda path, headers: (200, {"Content-Type": "application/json"}, answer.encode()))
        env = world_env(azurite.connection_string, api.url, SETTINGS["cursor"], CHUNKING_TIME_BUDGET="0")
        seen = World(functions, env, "long-cursor", NOTHING_GOES_WRONG, heal=None).run(5, 0)
        api.stop()
    finally:
        source.stop()
    assert seen.status["state"] == "failed" and not seen.failures
    assert "more than the 16,384 a continuation can carry" in seen.status["error"]


def test_an_error_answer_is_redacted_before_it_is_cut(functions, azurite):
    key = "k3y-abcdefg"  # 11 characters: under the 12 the piece rule covers, so only whole-redaction saves it
    body = json.dumps({"error": "invalid key", "pad": "p" * 243, "echo": key}).encode()
    api = LoopbackApi(lambda path, headers: (401, {"Content-Type": "application/json"}, body))
    try:
        env = world_env(
            azurite.connection_string, api.url, SETTINGS["none"], SOURCE_HEADERS=json.dumps({"x-api-key": key})
        )
        seen = World(functions, env, "cut-after", NOTHING_GOES_WRONG, heal=None).run(5, 0)
    finally:
        api.stop()
    assert seen.status["state"] == "failed"
    assert not any(key[: PIECE - 4] in text for text in seen.texts)  # not even most of it, cut


def test_a_numeric_api_key_in_the_source_url_is_redacted(functions, azurite):
    spec = SourceSpec("none", tuple(IDS[:5]), faults=tuple(Fault(at, "echo", status=401) for at in range(5)))
    source = HostileSource(spec)
    try:
        env = world_env(azurite.connection_string, f"{source.url}?api_key=83741920573619&pin=7305", SETTINGS["none"])
        seen = World(functions, env, "numeric-key", NOTHING_GOES_WRONG, heal=None).run(5, 0)
    finally:
        source.stop()
    assert seen.status["state"] == "failed"
    assert not any("83741920573619" in text for text in seen.texts)


def test_the_cli_says_storage_is_unreachable_without_a_traceback(app_env, azurite):
    closed = azurite.connection_string.replace(f":{azurite.blob_port}/", ":9/").replace(
        f":{azurite.queue_port}/", ":9/"
    )
    result = cli("status", "any-run", env={**app_env, "AzureWebJobsStorage": closed, "STORAGE_MAX_RETRIES": "0",
                                           "STORAGE_TIMEOUT": "2"})  # fmt: skip

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: storage failed") and "AccountKey" not in result.stderr
