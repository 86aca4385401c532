"""The source reader's JSON scanner against ijson, the streaming parser it replaced, on the same bytes.

    .venv/bin/python -m benchmarks.json_items [--rounds 3]

Both are fed the same answer in the same 64 KiB reads, in this process, one after the other; CPU seconds
are the medians of `--rounds` rounds. ijson (C backend, `items_coro`) builds each item's Python value and
gives no text, so it kept neither `1e400` nor `0.10000000000000000001` as written and held whole objects;
the scanner (core/json_items.py) gives each item's exact text. Peak traced memory is tracemalloc's, over
one pass. The ratio is the scanner's CPU over ijson's: below 1, the scanner is faster. ijson is not a
dependency of the app: `requirements-bench.txt` installs it for this comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Callable

import ijson

from core.json_items import JsonItems

READ = 64 * 1024


def answers() -> dict[str, bytes]:
    ids = [str(uuid.UUID(int=index * 7919)) for index in range(1_000_000)]
    return {
        "1M UUID strings": json.dumps(ids).encode(),
        "200k objects {id, seq}": json.dumps([{"id": ids[i], "seq": i} for i in range(200_000)]).encode(),
        "1M integers": json.dumps(list(range(1_000_000))).encode(),
        "5.6M empty objects (16 MiB)": b"[" + b",".join([b"{}"] * ((16 << 20) // 3)) + b"]",
    }


def scanner(body: bytes) -> int:
    items = JsonItems("", {}, 8 << 20)
    found = 0
    for start in range(0, len(body), READ):
        found += len(items.feed(body[start : start + READ].decode("utf-8")))
    return found + len(items.end())


def with_ijson(body: bytes) -> int:
    found = ijson.sendable_list()
    parser = ijson.items_coro(found, "item", use_float=False)
    count = 0
    for start in range(0, len(body), READ):
        parser.send(body[start : start + READ])
        count += len(found)
        del found[:]
    parser.close()
    return count + len(found)


def cpu_seconds(parse: Callable[[bytes], int], body: bytes, rounds: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(rounds):
        started = time.process_time()
        count = parse(body)
        times.append(time.process_time() - started)
    return statistics.median(times), count


def peak_mb(parse: Callable[[bytes], int], body: bytes) -> float:
    tracemalloc.start()
    try:
        parse(body)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"ijson backend: {ijson.backend}")
    print("| answer | items | scanner CPU s | ijson CPU s | scanner / ijson | scanner peak MB | ijson peak MB |")
    print("|---|---|---|---|---|---|---|")
    for name, body in answers().items():
        ours, count = cpu_seconds(scanner, body, args.rounds)
        theirs, their_count = cpu_seconds(with_ijson, body, args.rounds)
        assert count == their_count, (count, their_count)
        print(f"| {name} | {count:,} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} | "
              f"{peak_mb(scanner, body):.0f} | {peak_mb(with_ijson, body):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
