"""Put Message throughput and client CPU: the naive SDK loop, the SDK's async client, a raw-HTTP
ceiling, aiohttp with a prebuilt request, and this project's ingestion path, each on a fresh
Azurite, medians of repeated runs.

    .venv/bin/python -m benchmarks.enqueue [--messages 5000] [--repeat 3] [--json] [--chart docs/enqueue.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import yarl
from azure.storage.queue import QueueClient, QueueSasPermissions, TextBase64EncodePolicy, generate_queue_sas
from azure.storage.queue.aio import QueueClient as AsyncQueueClient

from core.context import app_context
from core.contract import COUNT_METADATA, ChunkRef, encode_chunk
from core.run_store import RunRecord
from core.settings import Settings
from core.storage import close_storage_clients
from fanout.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, start_azurite
from fanout.demo_api import demo_ids
from ingestion.chunk import ingest_chunk
from putmessage.connection_pool import ConnectionPool
from putmessage.message_body import message_body

QUEUE = "bench"
WARM_UP_QUEUE = "warm-up"
Measurement = tuple[float, float]  # messages/s, client CPU µs per message


def measured(messages: int, work: Callable[[], object]) -> Measurement:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return rates(messages, time.perf_counter() - wall, time.process_time() - cpu)


def rates(messages: int, wall: float, cpu: float) -> Measurement:
    return messages / wall, cpu / messages * 1e6


def naive_sdk_loop(azurite: Azurite, ids: list[str], window: int) -> Measurement:
    """(a) The article's loop: one synchronous send_message after another."""
    queue = QueueClient.from_connection_string(
        azurite.connection_string, QUEUE, message_encode_policy=TextBase64EncodePolicy()
    )
    queue.create_queue()
    return measured(len(ids), lambda: [queue.send_message(text) for text in ids])


def async_sdk_client(azurite: Azurite, ids: list[str], window: int) -> Measurement:
    """(b) The SDK's async client, `window` sends in flight."""

    async def main() -> None:
        async with AsyncQueueClient.from_connection_string(
            azurite.connection_string, QUEUE, message_encode_policy=TextBase64EncodePolicy()
        ) as queue:
            await queue.create_queue()
            await pool_of(window, ids, queue.send_message)

    return measured(len(ids), lambda: asyncio.run(main()))


def put_sas_url(azurite: Azurite, queue: str = QUEUE) -> str:
    QueueClient.from_connection_string(azurite.connection_string, queue).create_queue()
    sas = generate_queue_sas(ACCOUNT, queue, ACCOUNT_KEY, permission=QueueSasPermissions(add=True),
                             expiry=datetime.now(UTC) + timedelta(hours=1))  # fmt: skip
    return f"http://127.0.0.1:{azurite.queue_port}/{ACCOUNT}/{queue}/messages?{sas}"


def raw_http_ceiling(azurite: Azurite, ids: list[str], window: int, queue: str = QUEUE) -> Measurement:
    """(c) The least a client can do: prebuilt request bytes on keep-alive sockets, no retries."""
    url = put_sas_url(azurite, queue)
    _, _, target = url.partition(f"127.0.0.1:{azurite.queue_port}")
    head = (f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{azurite.queue_port}\r\nContent-Type: application/xml\r\n"
            "x-ms-version: 2026-10-06\r\nContent-Length: ").encode()  # fmt: skip

    async def main() -> None:
        pool = ConnectionPool(url, window)

        async def send(text: str) -> None:
            body = message_body(text, "base64")
            response = await pool.request(b"%b%d\r\n\r\n%b" % (head, len(body), body))
            if response.status != 201:
                raise RuntimeError(response.body)

        await pool_of(window, ids, send)
        pool.close()

    return measured(len(ids), lambda: asyncio.run(main()))


def aiohttp_prebuilt(azurite: Azurite, ids: list[str], window: int) -> Measurement:
    """aiohttp, the SDK's own async transport, with a prebuilt SAS URL and headers: what it costs."""
    url = yarl.URL(put_sas_url(azurite), encoded=True)
    headers = {"Content-Type": "application/xml", "x-ms-version": "2026-10-06"}

    async def main() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=window)) as session:

            async def send(text: str) -> None:
                async with session.post(url, data=message_body(text, "base64"), headers=headers) as response:
                    if response.status != 201:
                        raise RuntimeError(await response.text())

            await pool_of(window, ids, send)

    return measured(len(ids), lambda: asyncio.run(main()))


def ingestion_path(
    azurite: Azurite, ids: list[str], window: int, more_env: dict[str, str] | None = None
) -> Measurement:
    """(d) This project: the blob trigger's handler on one chunk (claim, read, check, send, checkpoints)
    in a warm worker: the process's clients are built, as after its first chunk (a small one here)."""
    env = {"AzureWebJobsStorage": azurite.connection_string, "QUEUE_NAME": QUEUE, "INGEST_CONCURRENCY": str(window)}
    env |= more_env or {}
    first, measured_chunk = ChunkRef("bench", 0), ChunkRef("bench", 1)

    async def main() -> Measurement:
        try:
            ctx = await app_context(Settings.from_env(env))
            await ctx.runs.create(
                RunRecord("bench", "default", len(ids), state="chunked", chunks=2, messages=len(ids) + 100)
            )
            for ref, texts in ((first, ids[:100]), (measured_chunk, ids)):
                await ctx.chunk_container.upload_blob(
                    ref.blob_name, encode_chunk(texts), metadata={COUNT_METADATA: str(len(texts))}
                )
            await ingest_chunk(ctx, first)
            wall, cpu = time.perf_counter(), time.process_time()
            await ingest_chunk(ctx, measured_chunk)
            return rates(len(ids), time.perf_counter() - wall, time.process_time() - cpu)
        finally:
            await close_storage_clients()

    return asyncio.run(main())


async def pool_of(window: int, ids: list[str], send: Callable) -> None:
    """Sends every ID with `window` sends in flight."""
    texts = iter(ids)

    async def sender() -> None:
        for text in texts:
            await send(text)

    await asyncio.gather(*(sender() for _ in range(window)))


def on_fresh_azurite(
    case: Callable[[Azurite, list[str], int], Measurement], ids: list[str], window: int
) -> Measurement:
    """The case on a new Azurite, warmed first (Node compiles its hot paths in the first thousand calls)."""
    azurite = start_azurite()
    try:
        raw_http_ceiling(azurite, demo_ids(1_000), 32, queue=WARM_UP_QUEUE)
        return case(azurite, ids, window)
    finally:
        azurite.close()


def medians(runs: list[Measurement]) -> Measurement:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def needs_matplotlib(parser: argparse.ArgumentParser) -> None:
    """Before a long run, not after it: --chart draws with matplotlib, which `make setup` does not install."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error("--chart draws with matplotlib: .venv/bin/pip install -r requirements-bench.txt")


def chart(path: str, ids: list[str], windows: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    naive = on_fresh_azurite(naive_sdk_loop, ids, 1)[0]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    axes.axhline(naive, color="grey", linestyle="--", label="(a) naive SDK loop")
    cases = [
        ("(b) SDK async client", async_sdk_client), ("aiohttp, prebuilt request", aiohttp_prebuilt),
        ("(c) raw-HTTP ceiling", raw_http_ceiling), ("(d) this project's ingestion", ingestion_path),
    ]  # fmt: skip
    for label, case in cases:
        axes.plot(windows, [on_fresh_azurite(case, ids, w)[0] for w in windows], marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("send window (Put Message calls in flight)")
    axes.set_ylabel("messages / s")
    axes.set_title(f"Put Message throughput on Azurite, {len(ids):,} messages per point")
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--window", type=int, default=64, help="send window for (b) and (d) (INGEST_CONCURRENCY's default)"
    )
    parser.add_argument("--ceiling-windows", default="32,64,128", help="windows tried for (c); the best counts")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--chart", metavar="PNG", help="also sweep windows and draw throughput against window")
    args = parser.parse_args()
    if args.chart:
        needs_matplotlib(parser)
    ids = demo_ids(args.messages)

    windows = [int(window) for window in args.ceiling_windows.split(",")]
    cases = {
        "naive": (naive_sdk_loop, 1), "sdk": (async_sdk_client, args.window),
        **{f"ceiling-{window}": (raw_http_ceiling, window) for window in windows},
        "aiohttp": (aiohttp_prebuilt, args.window), "ours": (ingestion_path, args.window),
    }  # fmt: skip
    runs: dict[str, list[Measurement]] = {name: [] for name in cases}
    for _ in range(args.repeat):  # round by round, so drift on the machine touches every case alike
        for name, (case, window) in cases.items():
            runs[name].append(on_fresh_azurite(case, ids, window))
    naive, sdk, aiohttp_client, ours = (medians(runs[name]) for name in ("naive", "sdk", "aiohttp", "ours"))
    best_window, ceiling = max(((w, medians(runs[f"ceiling-{w}"])) for w in windows), key=lambda item: item[1][0])
    result = {
        "messages": args.messages, "repeat": args.repeat, "window": args.window,
        "naive_sdk_loop": naive, "async_sdk_client": sdk, "raw_http_ceiling": ceiling,
        "ceiling_window": best_window, "aiohttp_prebuilt": aiohttp_client, "ingestion_path": ours,
        "ingestion_vs_naive": ours[0] / naive[0], "ingestion_vs_ceiling": ours[0] / ceiling[0],
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.messages:,} messages per run, a fresh Azurite (warmed with 1,000 calls) per run, "
              f"medians of {args.repeat} rounds\n")  # fmt: skip
        print("| client | window | msg/s | client CPU µs/msg |")
        print("|---|---|---|---|")
        for label, window, (rate, cpu) in [
            ("(a) naive synchronous SDK loop", 1, naive), ("(b) SDK async client", args.window, sdk),
            ("(c) raw-HTTP ceiling (best window)", best_window, ceiling),
            ("aiohttp, prebuilt URL and headers", args.window, aiohttp_client),
            ("(d) this project's ingestion path", args.window, ours),
        ]:  # fmt: skip
            print(f"| {label} | {window} | {rate:,.0f} | {cpu:,.0f} |")
        print(f"\nd/a = {result['ingestion_vs_naive']:.2f}x   d/c = {result['ingestion_vs_ceiling']:.2f}")
        print("(c) writes prebuilt request bytes on the same connection pool (d) uses, without d's work.")
    if args.chart:
        chart(args.chart, demo_ids(min(args.messages, 3_000)), [1, 2, 4, 8, 16, 32, 64, 128])


if __name__ == "__main__":
    main()
