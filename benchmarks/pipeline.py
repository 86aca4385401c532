"""The whole pipeline, source → chunks → queue, for 100,000 IDs: wall time, IDs/s, peak RSS, and
storage requests per message (counted by a proxy in front of Azurite, in a run of its own).

    .venv/bin/python -m benchmarks.pipeline [--count 100000] [--json]

Azurite slows as it fills, so every case starts a fresh Azurite, and the raw-HTTP ceiling is
measured at the same fill (the same number of messages into an empty queue).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks.counting_proxy import CountingProxy
from benchmarks.enqueue import raw_http_ceiling
from fanout.azurite import ACCOUNT, ACCOUNT_KEY, PROJECT_ROOT, start_azurite
from fanout.demo_api import DemoApi, demo_ids


def run_child(connection_string: str, source_url: str) -> dict:
    env = {**os.environ, "AzureWebJobsStorage": connection_string, "SOURCE_URL": source_url, "QUEUE_NAME": "bench"}
    result = subprocess.run([sys.executable, "-m", "benchmarks.child", "pipeline"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, check=True, timeout=1800)  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def proxied_connection_string(blob_port: int, queue_port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob_port}/{ACCOUNT};QueueEndpoint=http://127.0.0.1:{queue_port}/{ACCOUNT};"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    api = DemoApi(count=args.count).start()
    try:
        azurite = start_azurite()
        try:
            timed = run_child(azurite.connection_string, api.url)
        finally:
            azurite.close()

        azurite = start_azurite()
        try:
            ceiling_rate, _ = raw_http_ceiling(azurite, demo_ids(args.count), 32)
        finally:
            azurite.close()

        azurite = start_azurite()
        blob_proxy, queue_proxy = CountingProxy(azurite.blob_port).start(), CountingProxy(azurite.queue_port).start()
        try:
            counted = run_child(proxied_connection_string(blob_proxy.port, queue_proxy.port), api.url)
        finally:
            blob_proxy.stop()
            queue_proxy.stop()
            azurite.close()
    finally:
        api.stop()
    requests = blob_proxy.total + queue_proxy.total
    rate = timed["enqueued"] / timed["seconds"]
    result = {
        "count": args.count, "state": timed["state"], "seconds": round(timed["seconds"], 1),
        "ids_per_second": round(rate), "peak_rss_mb": round(timed["peak_rss_mb"], 1),
        "ceiling_messages_per_second": round(ceiling_rate), "vs_ceiling": round(rate / ceiling_rate, 3),
        "storage_requests": requests, "requests_per_message": round(requests / counted["enqueued"], 5),
        "blob_requests": dict(blob_proxy.requests), "queue_requests": dict(queue_proxy.requests),
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    print(f"| {args.count:,} IDs end to end | value |\n|---|---|")
    print(f"| wall time | {result['seconds']} s |")
    print(f"| IDs/s (source → queue) | {result['ids_per_second']:,} |")
    ceiling, ratio = result["ceiling_messages_per_second"], result["vs_ceiling"]
    print(f"| raw-HTTP ceiling, same fill | {ceiling:,} msg/s (ours/ceiling {ratio}) |")
    print(f"| peak RSS of the process | {result['peak_rss_mb']} MB |")
    per_message = result["requests_per_message"]
    print(f"| storage requests per message | {per_message} ({requests:,} for {counted['enqueued']:,}) |")
    print(f"| blob requests | {dict(blob_proxy.requests)} |\n| queue requests | {dict(queue_proxy.requests)} |")


if __name__ == "__main__":
    main()
