"""Where the client's CPU goes per message: this project's ingestion path on one chunk, under cProfile.

    .venv/bin/python -m benchmarks.cpu_profile [--messages 5000] [--window 64] [--top 25]

A fresh, warmed Azurite (no model: latency would not change the CPU per message); the chunk is sent
once without the profiler (process CPU time per message, the number the README quotes) and once under
it. The profile's own overhead inflates every function, so read its shares, not its microseconds.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

from benchmarks.enqueue import ingestion_path, on_fresh_azurite
from fanout.azurite import start_azurite
from fanout.demo_api import demo_ids


def profiled(messages: int, window: int) -> pstats.Stats:
    azurite = start_azurite()
    try:
        profile = cProfile.Profile(time.process_time)  # CPU time: waiting in epoll is not work
        profile.enable()
        ingestion_path(azurite, demo_ids(messages), window)
        profile.disable()
    finally:
        azurite.close()
    return pstats.Stats(profile, stream=io.StringIO())


AREAS = (  # where a function lives -> what the README calls it
    ("/asyncio/", "asyncio event loop (tasks, futures, transports, selector)"),
    ("<method 'send'", "socket send/recv (system calls)"),
    ("<method 'recv'", "socket send/recv (system calls)"),
    ("select", "asyncio event loop (tasks, futures, transports, selector)"),
    ("/putmessage/", "putmessage (sender, pool, parser callbacks)"),
    ("httptools", "llhttp (httptools)"),
    ("/ingestion/", "ingestion (window, chunk, claim)"),
    ("/azure/", "Azure SDK (claim, checkpoints, blob reads)"),
    ("/aiohttp/", "Azure SDK (claim, checkpoints, blob reads)"),
)


def area(file: str, name: str) -> str:
    where = f"{file} {name}"
    return next((label for marker, label in AREAS if marker in where), "other (built-ins, base64, json, …)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    rates = [on_fresh_azurite(ingestion_path, demo_ids(args.messages), args.window) for _ in range(3)]
    cpu = sorted(rate[1] for rate in rates)[1]
    print(f"client CPU per message, median of 3 fresh Azurites: {cpu:.0f} µs ({args.messages:,} messages, "
          f"window {args.window}; msg/s {sorted(rate[0] for rate in rates)[1]:,.0f})\n")  # fmt: skip
    stats = profiled(args.messages, args.window)
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    areas: dict[str, float] = {}
    for (file, _, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        areas[area(file, name)] = areas.get(area(file, name), 0.0) + entry[2]
    print("| where | share of the client's CPU |\n|---|---|")
    for label, own in sorted(areas.items(), key=lambda item: item[1], reverse=True):
        print(f"| {label} | {own / total:.0%} |")
    print("\n| function | calls | own time, share of all | per message µs (profiled) |\n|---|---|---|---|")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    for (file, line, name), (_, calls, own, _, _) in rows[: args.top]:
        where = f"{file.rpartition('/')[2]}:{line} {name}" if line else name
        print(f"| `{where}` | {calls:,} | {own / total:.1%} | {own / args.messages * 1e6:.1f} |")


if __name__ == "__main__":
    main()
