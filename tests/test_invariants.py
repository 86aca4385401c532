"""The product's promises, checked against sources, failures and operators nobody here chose.

Hypothesis generates a hostile source (any pagination; empty pages that name a next one; a circle back to
any earlier page; an API that ignores the position asked for or shuffles its pages; any JSON item,
numbers and escapes kept as written, a lone surrogate; error statuses with reason phrases of any length,
bodies that echo the request's secrets, bodies cut short with and without a length, stacked content
encodings, trickling bytes, a next position to refuse) and a hostile schedule (invocations killed at any
moment, deliveries doubled, cancel, redrive, purge, resume or a deleted chunk blob at any step). Each run has
a message shape (plain, an envelope, batches with or without either) and goes through the app's own functions
against Azurite (testkit/run_world.py) until the sweeper finds nothing more to do; a run that ended failed or
cancelled is then redriven once against the source made healthy (the one documented action).
Then, from the queue's side:

- I1 nothing lost: every item is in the queue, or the run is visibly failed naming why (its error, its
  failed chunks); an item missing from a completed run is in a chunk listed failed with its reason;
- I2 nothing stranded: the run ends completed, failed or cancelled, and the sweeper moves it there;
- I3 duplicates within the bound: the queue holds at most what the run took, plus
  INGEST_CHECKPOINT_EVERY + INGEST_CONCURRENCY messages (times `batch_max_items` IDs) for each interruption;
  with an envelope, every copy of an item carries the same `seq`, and a completed run's seqs are 0..n-1;
- I4 nothing endless: every invocation returns within INVOCATION_LIMIT, the run settles within MAX_STEPS,
  and a run takes at most SOURCE_MAX_READS_PER_ITEM times its distinct items, plus a page and 100;
- I5 nothing leaked: no configured secret, nor any 12 characters of one, in any HTTP answer, status,
  event or log record.

`make test` runs a bounded number of examples; `make soak MINUTES=N` runs them for as long as asked,
keeping Hypothesis's database (a failure is replayed first, then shrunk and printed as a reproduction).
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from fanout.messages import unpack
from testkit.azure_model import AzureModel, ModelConfig
from testkit.hostile_source import SETTINGS, Fault, HostileSource, SourceSpec
from testkit.run_world import ACTIONS, CHECKPOINT, WINDOW, Schedule, World, world_env

PIECE = 12  # no run of this many characters of a secret may leave the app
SOAK = os.environ.get("SOAK") == "1"  # `make soak`: examples drawn afresh, failures shrunk
EXAMPLES = int(os.environ.get("INVARIANT_EXAMPLES", "12"))
MAX_EMPTY_PAGES = 4
READS_PER_ITEM = 2.0
BEARER = "tok_" + "8f3a9c1e5b7d2f4a6c8e0b1d3f5a7c9e"  # a secret the source is sent, and may echo in part
API_KEY = "key-51c0ffee4ab1e2d3"
PASSWORD = "pw-9ab8cd7ef6"
SECRETS = (BEARER, API_KEY, PASSWORD)

strings = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
item_texts = st.one_of(
    strings.map(lambda text: json.dumps(text, ensure_ascii=False)),
    strings.map(json.dumps),  # escaped: "caf\u00e9"
    st.integers(-(2**80), 2**80).map(str),
    st.sampled_from(["0.1", "0.10000000000000000001", "1e400", "-0", "1E+2", "true", "null", "[]", "{}"]),
    st.tuples(strings, st.integers(0, 999)).map(
        lambda pair: json.dumps({"id": pair[0], "n": pair[1]}, separators=(",", ":"))
    ),
)
faults = st.builds(
    Fault,
    at=st.integers(0, 14),
    kind=st.sampled_from(["status", "echo", "cut", "cut-no-length", "trickle", "empty", "bad-next"]),
    status=st.sampled_from([401, 404, 429, 500, 502, 503, 504]),
    reason_chars=st.sampled_from([0, 10, 60_000]),
    retry_after=st.sampled_from([None, "0", "nonsense"]),
)


@st.composite
def hostile_sources(draw: st.DrawFn) -> SourceSpec:
    mode = draw(st.sampled_from(["none", "cursor", "next-link", "page"]))
    items = draw(st.lists(item_texts, unique=True, max_size=60))
    if draw(st.integers(0, 19)) == 0 and items:  # now and then an item no queue message can carry
        items.insert(draw(st.integers(0, len(items))), '"x\\udc00"')
    pages: list[int] = []
    if mode != "none":
        smallest = 1 if mode == "page" else 0  # an empty page ends `page` mode; elsewhere it may name a next one
        left = len(items)
        while left or not pages:
            size = min(left, draw(st.integers(smallest, 12)))
            pages.append(size)
            left -= size
    endless = mode != "none" and draw(st.integers(0, 5)) == 0
    return SourceSpec(
        mode=mode,
        items=tuple(items),
        pages=tuple(pages),
        circle_to=draw(st.integers(0, len(pages) - 1)) if endless and pages else None,
        ignores_position=mode != "none" and draw(st.integers(0, 9)) == 0,
        shuffles=draw(st.integers(0, 9)) == 0,
        changes_after=draw(st.integers(1, 12)) if draw(st.integers(0, 9)) == 0 else None,
        codings=draw(st.sampled_from([(), ("gzip",), ("gzip", "gzip"), ("deflate",), ("gzip", "deflate")])),
        faults=tuple(draw(st.lists(faults, max_size=4))),
        seed=draw(st.integers(0, 1000)),
    )


schedules = st.builds(
    Schedule,
    actions=st.lists(st.tuples(st.integers(0, 30), st.sampled_from(ACTIONS)), max_size=3).map(tuple),
    kills=st.lists(st.tuples(st.integers(0, 25), st.floats(0.0, 0.25)), max_size=2).map(tuple),
    doubled=st.frozensets(st.integers(0, 25), max_size=2),
)
# Storage as Azure answers it at its limits (testkit/azure_model.py): latency, 503 ServerBusy past a queue's
# rate, connections reset before or after a message is stored (after: the sender retries, a duplicate), and
# gateway answers in front of it (500, 502, 504: nothing stored, retried).
storage_faults = st.sampled_from(
    [None, ModelConfig(median_ms=1, p99_ms=8, queue_rate=150, account_rate=2_000, reset_rate=0.03, gateway_rate=0.03,
                       seed=7)]
)  # fmt: skip


# The message shapes (core/delivery.py): plain as the source gave it, an envelope, batches of a few items
# (a byte limit that cuts them early too), with a batch input; or held by a max_backlog while a consumer drains.
shapes = st.sampled_from([
    {}, {"envelope": True}, {"batch_max_items": 3}, {"batch_max_items": 4, "envelope": True, "batch_max_bytes": 700},
    {"batch_max_items": 50, "batch_input": {"job": "inv"}},
    {"max_backlog": 2}, {"max_backlog": 3, "batch_max_items": 2, "envelope": True},  # a consumer drains the queue
])  # fmt: skip


def app_settings(azurite: Any, source: HostileSource, spec: SourceSpec, budget: str) -> dict[str, str]:
    """The world's settings, the source reached with secrets in its URL and headers (which it may echo)."""
    url = source.url.replace("http://", f"http://reader:{PASSWORD}@") + f"?api_key={API_KEY}"
    return world_env(
        azurite.connection_string, url, SETTINGS[spec.mode], CHUNKING_TIME_BUDGET=budget,
        SOURCE_HEADERS=json.dumps({"Authorization": f"Bearer {BEARER}"}), SOURCE_MAX_EMPTY_PAGES=str(MAX_EMPTY_PAGES),
        SOURCE_MAX_READS_PER_ITEM=str(READS_PER_ITEM),
    )  # fmt: skip


def message_of(item: str) -> str:
    """What the queue holds for an item: a string's value, any other value's text."""
    return json.loads(item) if item.startswith('"') else item


def content_fault(spec: SourceSpec) -> bool:
    """A source that healing its faults does not mend: what it answers is itself the trouble."""
    ignored = spec.ignores_position and (len(spec.pages) > 1 or spec.mode == "page")  # page mode never ends then
    goes_round = spec.circle_to is not None or ignored
    changes = spec.shuffles or spec.changes_after is not None  # a page answered otherwise when read again
    return goes_round or changes or any("\\udc00" in item for item in spec.items)


@pytest.mark.own_azurite
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not SOAK,
    phases=list(Phase) if SOAK else [Phase.explicit, Phase.reuse, Phase.generate],  # `make test` does not shrink
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)  # fmt: skip
@example(  # found by the soak: a deleted chunk failed a run that tolerates none, then the redrive stopped it
    spec=SourceSpec(mode="none", items=('"\u00bf\u00c0\U000147c3"',), pages=(), circle_to=None, ignores_position=False,
                    shuffles=True, changes_after=None, codings=(), faults=(), seed=0),
    schedule=Schedule(actions=((0, "delete-chunk"),), kills=(), doubled=frozenset([0, 1])),
    chunk_size=24, budget="0", max_failed=0, storage=None, shape={},
)  # fmt: skip
@example(  # a run held by its max_backlog, killed, doubled and cancelled while it waits
    spec=SourceSpec(mode="page", items=tuple(f'"id-{k}"' for k in range(30)), pages=(10, 10, 10), circle_to=None,
                    ignores_position=False, shuffles=False, changes_after=None, codings=(), faults=(), seed=0),
    schedule=Schedule(actions=((12, "cancel"), (20, "redrive")), kills=((6, 0.05),), doubled=frozenset([3])),
    chunk_size=4, budget="60", max_failed=0, storage=None, shape={"max_backlog": 2},
)  # fmt: skip
@given(
    spec=hostile_sources(),
    schedule=schedules,
    chunk_size=st.integers(1, 25),
    budget=st.sampled_from(["0", "60"]),
    max_failed=st.integers(0, 2),
    storage=storage_faults,
    shape=shapes,
)
def test_every_run_ends_with_nothing_lost_stranded_endless_or_leaked(
    functions, azurite, spec, schedule, chunk_size, budget, max_failed, storage, shape
):
    source = HostileSource(spec)
    model = None if storage is None else AzureModel(storage, queue_port=azurite.queue_port).start()
    run_id = f"inv-{secrets.token_hex(4)}"
    try:
        env = app_settings(azurite, source, spec, budget)
        if model is not None:  # the app's queues through the model; its blobs and the world's reads direct
            env["AzureWebJobsStorage"] = azurite.connection_string.replace(
                f"127.0.0.1:{azurite.queue_port}", f"127.0.0.1:{model.ports['queue']}"
            )
        world = World(functions, env, run_id, schedule, heal=lambda: setattr(source, "spec", spec.healthy()),
                      observe_with=azurite.connection_string)  # fmt: skip
        seen = world.run(chunk_size, max_failed, **shape)
    finally:
        source.stop()
        if model is not None:
            model.stop()

    status = seen.status
    batched, envelope = shape.get("batch_max_items", 1) > 1, shape.get("envelope", False)
    unpacked = [unpack(message, batched=batched, envelope=envelope) for message in seen.messages]
    items = [item for message in unpacked for item in message.items]  # what arrived, ID by ID
    delivered = Counter(items)
    expected = {message_of(item) for item in spec.items if "\\udc00" not in item}
    failed_chunks = status.get("failed_chunks", [])
    story = f"status={json.dumps(status)[:2000]} seen={seen.failures[:3]} kills={seen.kills}"

    if not status and seen.purged_with is None:  # the POST was killed before it made the run: nothing promised
        assert seen.kills and not seen.started and not seen.messages, story
        return
    # I2 nothing stranded: ended, or purged by the operator
    assert seen.purged_with is not None or status.get("state") in ("completed", "failed", "cancelled"), story
    # I1 nothing lost
    assert set(delivered) <= expected | {message_of(item) for item in spec.items}, "a message no source item made"
    if batched:
        assert all(message.batch_input == shape.get("batch_input") for message in unpacked), story
        assert all(1 <= len(message.items) <= shape["batch_max_items"] for message in unpacked), story
    if envelope:  # the idempotency key: the same item under the same seq in every copy, seqs complete
        keys = {(m.run_id, m.first_seq + i, item) for m in unpacked for i, item in enumerate(m.items)}
        assert {run_id for run_id, _, _ in keys} <= {run_id} and len({seq for _, seq, _ in keys}) == len(keys), story
        if not content_fault(spec):  # each item came once from the source: one seq for all its copies
            assert len({item for _, _, item in keys}) == len(keys), story
        if status.get("state") == "completed" and not failed_chunks and not content_fault(spec):
            assert {seq for _, seq, _ in keys} == set(range(status["messages"]["fetched"])), story
    if seen.purged_with is not None:
        assert len(seen.messages) == seen.purged_with, "messages were sent for a run after it was purged"
    elif status["state"] == "completed":
        missing = expected - set(delivered)
        assert not missing or failed_chunks, f"completed, {len(missing)} items missing, no chunk failed: {story}"
        assert len(missing) <= chunk_size * len(failed_chunks), story
        assert all(chunk["error"] for chunk in failed_chunks), story
    else:
        assert status.get("error") or failed_chunks, f"failed without a reason: {story}"
        if seen.healed and not content_fault(spec):  # the redrive delivers all but chunks that are gone
            assert failed_chunks and all("is gone" in chunk["error"] for chunk in failed_chunks), story
    # I3 duplicates within the bound, counted from the source's side: an honest source serves each ID once
    interruptions = seen.kills + len(schedule.actions) + len(schedule.doubled) + 1
    stored_twice = model.stats[f"reset_after {env['QUEUE_NAME']}"] if model is not None else 0  # answers lost
    resent = (interruptions * (CHECKPOINT + WINDOW) + stored_twice) * shape.get("batch_max_items", 1)  # in IDs
    distinct = len(set(spec.items))
    largest_page = max(spec.pages, default=len(spec.items))
    if content_fault(spec):  # it serves IDs again: what a run takes is bounded by what it found new (I4)
        assert len(items) <= READS_PER_ITEM * distinct + 100 + largest_page + resent, story
    else:
        assert len(items) - len(delivered) <= resent, f"{len(items) - len(delivered)} dupes {story}"
    # I4 nothing endless: what a run takes is bounded by what it found new
    fetched = (status.get("messages") or {}).get("fetched") or 0
    assert fetched <= READS_PER_ITEM * distinct + 100 + largest_page, story
    # I5 nothing leaked
    for text in seen.texts:
        for secret in SECRETS:
            pieces = {secret[start : start + PIECE] for start in range(len(secret) - PIECE + 1)}
            assert not any(piece in text for piece in pieces), f"a piece of a secret left the app: {text[:300]}"
