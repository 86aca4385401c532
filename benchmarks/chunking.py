"""Chunking memory and time: 1M and 5M IDs from one JSON response, each size in a process of its own.

    .venv/bin/python -m benchmarks.chunking [--counts 1000000,5000000] [--json]

The source body is read as it streams (core/json_items.py) and chunks upload while it arrives, so
peak memory should not depend on the size of the source.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from fanout.azurite import PROJECT_ROOT, free_port, start_azurite


def chunk_in_child(count: int) -> dict:
    """One size: a fresh Azurite, the demo API in a process of its own (its memory is not ours)."""
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "fanout", "demo-api", "--port", str(port), "--count", str(count)],
                           cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    api.stdout.readline()  # "demo API serving …": it listens
    azurite = start_azurite()
    try:
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string,
               "SOURCE_URL": f"http://127.0.0.1:{port}/ids"}  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "benchmarks.child", "chunk"], cwd=PROJECT_ROOT, env=env,
                                capture_output=True, text=True, check=True, timeout=1800)  # fmt: skip
        return {"count": count, **json.loads(result.stdout.strip().splitlines()[-1])}
    finally:
        azurite.close()
        api.terminate()
        api.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1000000,5000000")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [chunk_in_child(int(count)) for count in args.counts.split(",")]
    if args.json:
        ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
        print(json.dumps({"runs": results, "peak_ratio_largest_vs_smallest": ratio}))
        return
    print("| IDs in one response | chunks | seconds | IDs/s | CPU s | RSS before | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['count']:,} | {r['chunks']:,} | {r['seconds']:.1f} | {r['messages'] / r['seconds']:,.0f} "
              f"| {r['cpu_seconds']:.1f} | {r['rss_before_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB |")  # fmt: skip
    print(f"\npeak RSS, largest / smallest source: {results[-1]['peak_rss_mb'] / results[0]['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
