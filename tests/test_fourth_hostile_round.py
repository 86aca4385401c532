"""A fourth hostile round (a review of the purge's mark, NO_PROXY, the TTL warning): a retried or doubled purge
racing a start under the freed id, a redrive after the purge judged the run, a late finisher of a purged run,
the identity endpoint behind NO_PROXY's CIDR, a consumer watched only now and then. Each failed before its fix."""

from __future__ import annotations

import json
import os
import time

import azure.functions as func
import pytest

from core.context import app_context
from core.network import Network
from core.proxy import Proxies, proxy_of
from core.run_store import RunStore
from runs import purge
from testkit.chunked_runs import write_chunked_run
from testkit.http_requests import BASE, body_of, ingest_every_chunk, post_ingestion, post_redrive, status_of
from testkit.loop_server import LoopServer


def delete_run(run_id: str) -> func.HttpRequest:
    return func.HttpRequest("DELETE", f"{BASE}/ingestions/{run_id}", route_params={"run_id": run_id}, body=b"")


def failed_run(on_loop, probe, run_id: str) -> None:
    """A finished (failed) run with one chunk blob, as tests/test_purge.py makes it."""
    write_chunked_run(on_loop, probe, run_id, ["a", "b"])
    ctx = on_loop(app_context())
    record, etag = on_loop(ctx.runs.get_versioned(run_id))
    on_loop(ctx.runs.save(record.failed("the source went away", 1, 2), if_match=etag))


def assert_new_run_delivers_everything(on_loop, functions, probe, run_id: str) -> None:
    assert probe.chunk_names(run_id), f"the new run's chunk blobs are gone: {status_of(on_loop, functions, run_id)}"
    ingest_every_chunk(on_loop, functions, probe, run_id)
    status = status_of(on_loop, functions, run_id)
    assert (status["state"], status["messages"]["enqueued"]) == ("completed", 200), status
    delivered_ids = probe.consume()
    assert len(delivered_ids) == len(set(delivered_ids)) == 200


def test_a_retried_purge_racing_a_start_under_the_freed_id_leaves_the_new_run_alone(
    on_loop, functions, probe, monkeypatch
):
    """A purge that finds no record of its own (the id already purged: a client's retried DELETE) never deletes
    the blobs of a new run started under the id while it looks: the new run delivers every ID."""
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    run_id = "retried-purge"
    failed_run(on_loop, probe, run_id)
    assert on_loop(functions["delete_ingestion"](delete_run(run_id))).status_code == 200  # the first DELETE
    starts: list[func.HttpResponse] = []
    purge_mark = RunStore.purge_mark

    async def start_meanwhile(store, run_id_):
        if not starts:  # the new run starts as the retried DELETE looks for a mark
            starts.append(await functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 64})))
        return await purge_mark(store, run_id_)

    monkeypatch.setattr(RunStore, "purge_mark", start_meanwhile)
    retried = on_loop(functions["delete_ingestion"](delete_run(run_id)))  # the retried DELETE
    monkeypatch.setattr(RunStore, "purge_mark", purge_mark)

    assert starts[0].status_code == 202, body_of(starts[0])
    assert_new_run_delivers_everything(on_loop, functions, probe, run_id)
    assert retried.status_code in (404, 409), body_of(retried)


def test_two_purges_of_a_cut_short_purge_never_touch_a_run_started_after_the_first_ends(
    on_loop, functions, probe, monkeypatch
):
    """Two operators purge a run whose purge was cut short: the one that read the mark before the other freed the
    id does not delete the blobs of a run started under the id after that: the new run delivers every ID."""
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    run_id = "purged-twice"
    failed_run(on_loop, probe, run_id)
    ctx = on_loop(app_context())

    async def dies(container, names, hold):
        raise ConnectionError("the purging instance died")

    with monkeypatch.context() as patched:
        patched.setattr(purge, "_delete_all", dies)
        with pytest.raises(ConnectionError):
            on_loop(purge.purge_run(ctx, run_id))

    monkeypatch.setattr(purge, "PURGE_MARK_STALE", 0.0)  # both purges come once the cut-short mark is stale
    starts: list[func.HttpResponse] = []
    other: list[func.HttpResponse] = []
    calls = [0]
    purge_mark = RunStore.purge_mark

    async def other_purge_and_a_start_meanwhile(store, run_id_):
        mark = await purge_mark(store, run_id_)
        calls[0] += 1
        if calls[0] == 1:  # the first purge has read the mark: the second runs to its end, then a start
            other.append(await functions["delete_ingestion"](delete_run(run_id)))
            starts.append(await functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 64})))
        return mark

    monkeypatch.setattr(RunStore, "purge_mark", other_purge_and_a_start_meanwhile)
    first = on_loop(functions["delete_ingestion"](delete_run(run_id)))
    monkeypatch.setattr(RunStore, "purge_mark", purge_mark)

    assert other[0].status_code == 200, body_of(other[0])
    assert starts[0].status_code == 202, body_of(starts[0])
    assert_new_run_delivers_everything(on_loop, functions, probe, run_id)
    assert body_of(first).get("chunk_blobs", 0) <= 1, body_of(first)


def test_a_run_redriven_after_the_purge_checked_it_is_not_purged(on_loop, functions, probe, monkeypatch):
    """The purge marks the run only as it was read when it was judged finished (its docstring: "only as it was
    read: a run changed meanwhile is a 409"): a run a redrive reopened after that check answers 409 and is
    kept, with its chunk, its record and its redrive."""
    run_id = "redriven-meanwhile"
    failed_run(on_loop, probe, run_id)
    redrives: list[func.HttpResponse] = []
    send_unsent_event = purge.send_unsent_event

    async def redriven_meanwhile(ctx, run_id_):
        sent = await send_unsent_event(ctx, run_id_)
        redrives.append(await functions["redrive_ingestion"](post_redrive(run_id)))
        return sent

    monkeypatch.setattr(purge, "send_unsent_event", redriven_meanwhile)
    answer = on_loop(functions["delete_ingestion"](delete_run(run_id)))
    monkeypatch.setattr(purge, "send_unsent_event", send_unsent_event)

    assert redrives[0].status_code in (200, 202), body_of(redrives[0])
    assert answer.status_code == 409, body_of(answer)
    assert probe.chunk_names(run_id), "the redriven run's chunk was deleted"
    assert status_of(on_loop, functions, run_id)["run_id"] == run_id  # still there, its redrive queued


def test_a_consumer_that_drains_fast_between_long_sending_spells_is_not_warned_of():
    """The TTL warning judges the drain rate over the time the looks watched the queue: a consumer that emptied a
    1,000-message backlog in 60 s each time the run waited (~16/s) is not said to need longer than the
    messages' one-hour time-to-live, however long the run sent between its waits (unwatched, not undrained)."""
    from ingestion.backlog import ttl_warning

    hour = 3600
    samples = [(0.0, 1000), (60.0, 0)]  # over the bound, then back from waiting: drained in a minute
    samples += [(3 * hour + 60.0, 1000)]  # three hours of sending later, over the bound again
    assert ttl_warning(samples, hour) is None, ttl_warning(samples, hour)


def test_no_proxy_entries_separated_by_a_tab_or_a_newline_are_read_as_curl_and_go_read_them():
    """NO_PROXY "a.example, <TAB>b.example" (or a newline after a comma, as a multi-line app setting gives it)
    sends b.example direct: curl skips blanks and tabs around an entry, Go trims all white space."""
    proxy = proxy_of("http://proxy.internal:3128", "HTTPS_PROXY")
    for no_proxy in ("a.example,\tb.example", "a.example,\nb.example", "a.example ,\t b.example"):
        assert Proxies(https=proxy, no_proxy=no_proxy).for_url("https://b.example/x") is None, repr(no_proxy)


def test_a_finisher_of_the_purged_run_never_marks_a_run_started_under_the_id_after_the_purge(
    on_loop, functions, probe, monkeypatch
):
    """The last chunk's invocation settles its run; a purge and a new start under the id that come between its
    look at the run and its completion mark leave the new run unmarked: the new run is not `finished` before
    it has run, and its own completion event is sent when it completes."""
    from testkit.chunked_runs import delivered
    from testkit.run_events import events_of

    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    run_id = "stale-finisher"
    name = write_chunked_run(on_loop, probe, run_id, ["a", "b"])
    mark_event = RunStore.mark_event
    between: list[func.HttpResponse] = []
    busy = [False]

    async def purge_and_start_first(store, run_id_, event):
        if not between and not busy[0]:  # the finisher has looked at its run and is about to mark it
            busy[0] = True
            between.append(await functions["delete_ingestion"](delete_run(run_id)))
            between.append(await functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 64})))
            busy[0] = False
        return await mark_event(store, run_id_, event)

    monkeypatch.setattr(RunStore, "mark_event", purge_and_start_first)
    on_loop(functions["ingest_chunk"](delivered(probe, name)))  # the old run's last chunk, and its settling
    monkeypatch.setattr(RunStore, "mark_event", mark_event)
    assert [answer.status_code for answer in between] == [200, 202], [body_of(a) for a in between]
    events_of(probe, os.environ)  # the old run's event(s), sent by the purge (and the finisher)

    fresh = status_of(on_loop, functions, run_id)
    ingest_every_chunk(on_loop, functions, probe, run_id)
    status = status_of(on_loop, functions, run_id)
    assert (status["state"], status["messages"]["enqueued"]) == ("completed", 200), status
    events = events_of(probe, os.environ)
    assert [(e["run_id"], e["state"], e["messages"]["enqueued"]) for e in events] == [(run_id, "completed", 200)]
    assert fresh["finished_at"] is None, f"the new run read finished before it ran: {fresh}"


class IdentityEndpoint(LoopServer):
    """The App Service managed identity endpoint (IDENTITY_ENDPOINT, IDENTITY_HEADER) on loopback: a token a GET."""

    async def _client(self, reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps({"access_token": "t" * 40, "expires_on": str(int(time.time()) + 3600),
                           "resource": "https://storage.azure.com", "token_type": "Bearer"}).encode()  # fmt: skip
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%b" % (len(body), body))  # fmt: skip
        await writer.drain()
        writer.close()


def test_the_managed_identity_endpoint_named_in_no_proxy_by_a_cidr_block_is_reached_directly(on_loop, monkeypatch):
    """NO_PROXY as the app documents it ("IP addresses or CIDR blocks"; "in Azure name the managed identity
    endpoint's host here if the proxy cannot reach it") holds for the storage credential's token requests too:
    with NO_PROXY=127.0.0.0/8 the identity endpoint on 127.0.0.1 is asked directly, never through HTTP_PROXY."""
    from testkit.loopback_proxy import LoopbackProxy

    endpoint = IdentityEndpoint().start()
    proxy = LoopbackProxy({"127.0.0.1": "127.0.0.1"}).start()
    try:
        for name in (
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "HTTPS_PROXY",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "MSI_ENDPOINT",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{endpoint.port}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", "header")
        proxies = Proxies(http=proxy_of(proxy.url, "HTTP_PROXY"), no_proxy="127.0.0.0/8")
        assert proxies.for_url(os.environ["IDENTITY_ENDPOINT"]) is None  # the app's own rule: direct

        async def token():  # as the app makes its credentials (storage, webhook, source): Network.credential
            async with Network(proxies=proxies).credential(None) as credential:
                return await credential.get_token("https://storage.azure.com/.default")

        assert on_loop(token()).token == "t" * 40
        assert dict(proxy.forwarded) == {} and proxy.tunnels == {}, f"through the proxy: {dict(proxy.forwarded)}"
    finally:
        proxy.stop()
        endpoint.stop()
