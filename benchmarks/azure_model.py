"""Benchmarks under the Azure model (testkit/azure_model.py, a proxy in front of Azurite): the clients
at Azure-like latency, the fan-out against Azure's per-queue and per-account limits, and a chart.

    .venv/bin/python -m benchmarks.azure_model [--scale 50] [--json] [--chart docs/azure-model.png]

1. Clients, one chunk, Azure's latency (median 6 ms, p99 40 ms, log-normal; Azure's own targets,
   which Azurite never reaches): the naive SDK loop, the SDK's async client, this project's ingestion,
   `--rounds` times round by round (a fresh Azurite each run), the median of each.
2. The fan-out with Azure slowed down `--scale` times (rates / scale, latency x scale: Azure's 2,000
   msg/s a queue and 20,000 requests/s an account become 40 and 400 at scale 50, which this machine's
   Azurite keeps up with; what has no unit, in-flight sends per limit and throughput per limit, is
   Azure's): 1, 2, 4, 8 chunks ingested at once, each by a process of its own (an instance, as parallel
   blob-trigger invocations run), against one queue, then QUEUE_PARTITIONS=4 and 16, then two accounts
   (QUEUE_ACCOUNTS, two models in front of one Azurite). Rates print as measured and times the scale (Azure's).
3. `--chart`: throughput against the send window at three latencies, and the fan-out against its limits
   (matplotlib: requirements-bench.txt); every number drawn is kept next to the chart, as JSON.

Every client runs in a process of its own; the model runs in this one. Numbers from one run on a
machine shared with other work: the ratios are what they say, the absolute rates are this machine's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.enqueue import WARM_UP_QUEUE, needs_matplotlib, raw_http_ceiling
from core.settings import Settings
from fanout.azurite import ACCOUNT, ACCOUNT_KEY, PROJECT_ROOT, Azurite, start_azurite
from fanout.demo_api import demo_ids
from testkit.azure_model import AzureModel, ModelConfig

CASE = [sys.executable, "-m", "benchmarks.model_case"]
Env = dict[str, str]
RETRIES: Env = {"STORAGE_MAX_RETRIES": "20", "STORAGE_RETRY_BACKOFF": "0.5", "STORAGE_RETRY_MAX_DELAY": "4"}


@contextmanager
def fresh_azurite() -> Iterator[Azurite]:
    """A new Azurite, warmed (Node compiles its hot paths in the first thousand calls)."""
    azurite = start_azurite()
    try:
        raw_http_ceiling(azurite, demo_ids(1_000), 32, queue=WARM_UP_QUEUE)
        yield azurite
    finally:
        azurite.close()


@contextmanager
def models(azurite: Azurite, config: ModelConfig, accounts: int = 1) -> Iterator[list[AzureModel]]:
    """One model per storage account, each in front of the same Azurite (its queues and blobs)."""
    started = [AzureModel(replace(config, seed=config.seed + n), queue_port=azurite.queue_port,
                          blob_port=azurite.blob_port).start() for n in range(accounts)]  # fmt: skip
    try:
        yield started
    finally:
        for model in started:
            model.stop()


def last_json(output: str) -> dict[str, Any]:
    return json.loads(output.strip().splitlines()[-1])


def client_run(config: ModelConfig, client: str, messages: int, window: int) -> dict[str, Any]:
    """One client on one chunk, on a fresh Azurite behind the model."""
    with fresh_azurite() as azurite, models(azurite, config) as (model,):
        ports = ["--queue-port", str(model.ports["queue"]), "--blob-port", str(model.ports["blob"])]
        done = subprocess.run([*CASE, "enqueue", client, *ports, "--messages", str(messages), "--window", str(window)],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=1800)  # fmt: skip
        return {**last_json(done.stdout), "throttled": model.stats["throttled_queue"]}


@dataclass(frozen=True)
class FanOut:
    chunks: int
    partitions: int = 1
    accounts: int = 1

    @property
    def label(self) -> str:
        where = f"{self.partitions} queue{'s' if self.partitions > 1 else ''}"
        return f"{self.chunks} chunk{'s' if self.chunks > 1 else ''}, {where}" + (
            f" x {self.accounts} accounts" if self.accounts > 1 else ""
        )

    def limit(self, config: ModelConfig) -> tuple[float, str]:
        """What the model lets through at most, and which limit that is."""
        queues = self.partitions * self.accounts * config.queue_rate
        accounts = self.accounts * config.account_rate
        return (queues, "queue") if queues <= accounts else (accounts, "account")


def fan_out_run(
    azurite: Azurite,
    config: ModelConfig,
    case: FanOut,
    seconds: float,
    scale: float,
    settings: dict[str, str] = RETRIES,
) -> dict[str, Any]:
    """`case.chunks` processes, one chunk each, started together; throughput over all of them."""
    limit, binding = case.limit(config)
    per_chunk = max(50, math.ceil(limit * seconds / case.chunks))
    with models(azurite, config, case.accounts) as accounts:
        env = {**os.environ, **settings, "AzureWebJobsStorage": accounts[0].connection_string(ACCOUNT, ACCOUNT_KEY),
               "QUEUE_NAME": f"fan-{secrets.token_hex(4)}", "QUEUE_PARTITIONS": str(case.partitions),
               "BENCH_RUN_ID": f"fan-{secrets.token_hex(4)}"}  # fmt: skip
        if case.accounts > 1:
            names = [f"BENCH_ACCOUNT_{n}" for n in range(case.accounts)]
            for name, model in zip(names, accounts, strict=True):
                env[name] = model.connection_string(ACCOUNT, ACCOUNT_KEY)
            env["QUEUE_ACCOUNTS"] = ",".join(names)
        instances = [instance(n, per_chunk, env) for n in range(case.chunks)]
        for started in instances:
            assert started.stdout is not None and started.stdout.readline().strip() == "ready"
        for model in accounts:  # from here on: the warm-up chunks are done
            model.stats.clear()
            model.stored_at.clear()
        go = time.time()
        for started in instances:
            assert started.stdin is not None
            started.stdin.write("go\n")
            started.stdin.flush()
        results = [last_json(started.communicate(timeout=1800)[0]) for started in instances]
        stats = sum((model.stats for model in accounts), Counter())
        steady = steady_rate(sorted(at for model in accounts for at in model.stored_at))
    sent = sum(result["sent"] for result in results)
    rate = sent / (max(result["ended"] for result in results) - go)
    return {
        "case": case.label, "chunks": case.chunks, "partitions": case.partitions, "accounts": case.accounts,
        "messages": sent, "states": sorted({result["state"] for result in results}),
        "messages_per_second": rate, "steady_messages_per_second": steady,
        "azure_messages_per_second": steady * scale, "limit": limit, "binding": binding, "of_limit": steady / limit,
        "throttled_queue": stats["throttled_queue"], "throttled_account": stats["throttled_account"],
        "send_retries": sum(result["send_retries"] for result in results),
        "cpu_us_per_message": sum(result["cpu_seconds"] for result in results) / sent * 1e6,
    }  # fmt: skip


def instance(index: int, messages: int, env: dict[str, str]) -> subprocess.Popen[str]:
    """One blob-trigger invocation on an instance of its own (benchmarks.model_case fanout)."""
    command = [*CASE, "fanout", "--index", str(index), "--messages", str(messages)]
    return subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def steady_rate(stored_at: list[float]) -> float:
    """Put Messages per second reaching Azurite between the 10th and the 90th percentile of the run:
    without the chunks' start (claim, download) and the last retries' tail."""
    first, last = stored_at[len(stored_at) // 10], stored_at[len(stored_at) * 9 // 10]
    return (len(stored_at) * 8 // 10) / (last - first)


def azure_backoff(scale: float) -> Env:
    """The default retry settings, slowed down as the model is: Azure's own backoff, in model time."""
    defaults = Settings.from_env({}).storage.retry
    return {"STORAGE_MAX_RETRIES": str(defaults.attempts - 1),
            "STORAGE_RETRY_BACKOFF": str(defaults.base_delay * scale),
            "STORAGE_RETRY_MAX_DELAY": str(defaults.max_delay * scale)}  # fmt: skip


def pace_runs(scale: float, seconds: float) -> list[dict[str, Any]]:
    """1 and 4 chunks on one queue with the default backoff time-scaled, the send pace off (the window
    sends regardless; each 503 sleeps its backoff) and on (putmessage/pace.py)."""
    config, rows = ModelConfig.azure(scale), []
    with fresh_azurite() as azurite:
        for chunks in (1, 4):
            for pace in ("off", "on"):
                settings = {**azure_backoff(scale), "BENCH_PACE": pace}
                rows.append({**fan_out_run(azurite, config, FanOut(chunks), seconds, scale, settings), "pace": pace})
    return rows


def fan_out_cases() -> list[FanOut]:
    return [FanOut(1), FanOut(2), FanOut(4), FanOut(8), FanOut(8, partitions=4), FanOut(8, partitions=16),
            FanOut(8, partitions=16, accounts=2)]  # fmt: skip


WINDOWS, MEDIANS = [1, 2, 4, 8, 16, 32, 64, 128], [0.0, 6.0, 20.0]


def latency_sweep(windows: list[int], median: float) -> list[float]:
    """This project's ingestion, no limits, at one latency and each send window: msg/s."""
    config = ModelConfig(median_ms=median, p99_ms=median * 40 / 6, queue_rate=math.inf, account_rate=math.inf)
    return [client_run(config, "ours", min(3_000, 300 * window), window)["messages_per_second"] for window in windows]


def chart(path: str, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    windows = result["sweep"]["windows"]
    for (median, rates), color in zip(result["sweep"]["median_ms"].items(), ("tab:blue", "tab:orange", "tab:green"),
                                      strict=True):  # fmt: skip
        latency = float(median)
        left.plot(windows, rates, marker="o", color=color,
                  label=f"latency median {latency:g} ms" if latency else "loopback Azurite")  # fmt: skip
        if latency:  # Little's law: window / mean latency (log-normal: median x exp(sigma^2 / 2))
            mean_s = latency / 1000 * math.exp((math.log(40 / 6) / 2.3263) ** 2 / 2)
            left.plot(windows, [w / mean_s for w in windows], linestyle=":", color=color,
                      label=f"window / mean latency ({mean_s * 1000:.1f} ms)")  # fmt: skip
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_ylim(10, 20_000)
    left.set_xlabel("send window (Put Message calls in flight, one chunk)")
    left.set_ylabel("messages / s")
    left.set_title("This project's ingestion against latency (no limits)")
    left.legend(fontsize="x-small", loc="upper left")
    left.grid(alpha=0.3)
    fan, scale = result["fan_out"], result["scale"]
    positions = list(range(len(fan)))
    right.bar(positions, [row["azure_messages_per_second"] for row in fan], color="tab:blue", label="measured, steady")
    right.hlines([row["limit"] * scale for row in fan], [p - 0.4 for p in positions], [p + 0.4 for p in positions],
                 colors="tab:red", linewidth=2.5, label="the binding limit (queue or account)")  # fmt: skip
    right.set_xticks(positions, [row["case"].replace(", ", "\n").replace(" x ", "\nx ") for row in fan],
                     fontsize="x-small")  # fmt: skip
    right.set_ylabel(f"messages / s, Azure-equivalent (measured x {scale:g})")
    right.set_title(f"Fan-out under Azure's limits (model slowed {scale:g}x)")
    right.legend(fontsize="small", loc="upper left")
    right.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=50.0, help="Azure slowed down this many times (fan-out)")
    parser.add_argument("--messages", type=int, default=2_000, help="messages per client run (part 1)")
    parser.add_argument("--rounds", type=int, default=3, help="client runs, round by round; medians (part 1)")
    parser.add_argument("--seconds", type=float, default=15.0, help="each fan-out case's length at its limit")
    parser.add_argument("--pace-scale", type=float, default=10.0, help="Azure slowed down this many times (pace)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--chart", metavar="PNG", help="also sweep window and latency, and draw both")
    args = parser.parse_args()
    if args.chart:
        needs_matplotlib(parser)
    clients = median_clients(args.messages, args.rounds)
    scaled = ModelConfig.azure(args.scale)
    with fresh_azurite() as azurite:
        fan = [fan_out_run(azurite, scaled, case, args.seconds, args.scale) for case in fan_out_cases()]
    pace = pace_runs(args.pace_scale, args.seconds)
    result: dict[str, Any] = {"scale": args.scale, "clients": clients, "fan_out": fan,
                              "pace_scale": args.pace_scale, "pace": pace}  # fmt: skip
    if args.chart:
        result["sweep"] = {"windows": WINDOWS, "median_ms": {str(m): latency_sweep(WINDOWS, m) for m in MEDIANS}}
    if args.json:
        print(json.dumps(result))
    else:
        print_tables(result, args.messages)
    if args.chart:
        chart(args.chart, result)
        Path(args.chart).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")


def median_clients(messages: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Each client `rounds` times, round by round (a fresh Azurite each run: they vary by a third from one
    to the next on this machine); the run with the median rate of each."""
    azure = ModelConfig.azure(1.0)
    runs: dict[str, list[dict[str, Any]]] = {"naive": [], "sdk": [], "ours": []}
    for _ in range(rounds):
        for client, results in runs.items():
            results.append(client_run(azure, client, messages, 1 if client == "naive" else 64))
    return {client: sorted(results, key=lambda run: run["messages_per_second"])[len(results) // 2]
            for client, results in runs.items()}  # fmt: skip


def print_tables(result: dict[str, Any], messages: int) -> None:
    clients = result["clients"]
    print(f"Clients at Azure's latency (median 6 ms, p99 40 ms), {messages:,} messages, a fresh Azurite each, "
          "the median of the rounds\n")  # fmt: skip
    print("| client | window | msg/s | client CPU µs/msg |\n|---|---|---|---|")
    for name, label, window in [
        ("naive", "(a) naive synchronous SDK loop", 1),
        ("sdk", "(b) SDK async client", 64),
        ("ours", "(d) this project's ingestion", 64),
    ]:
        row = clients[name]
        print(f"| {label} | {window} | {row['messages_per_second']:,.0f} | {row['cpu_us_per_message']:,.0f} |")
    ours, naive, sdk = (clients[name]["messages_per_second"] for name in ("ours", "naive", "sdk"))
    print(f"\nd/a = {ours / naive:.1f}x   d/b = {ours / sdk:.1f}x\n")
    scale = result["scale"]
    print(f"Fan-out, Azure slowed {scale:g}x (queue {2000 / scale:g} msg/s, account {20000 / scale:g} req/s), "
          "each chunk in a process of its own, window 64\n")  # fmt: skip
    print("| case | messages | msg/s, whole run | msg/s, steady | Azure-equivalent msg/s | binding limit | of limit | "
          "503 queue | 503 account | sends retried | client CPU µs/msg |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in result["fan_out"]:
        print(f"| {row['case']} | {row['messages']:,} | {row['messages_per_second']:,.0f} | "
              f"{row['steady_messages_per_second']:,.0f} | "
              f"{row['azure_messages_per_second']:,.0f} | {row['binding']} {row['limit'] * scale:,.0f} | "
              f"{row['of_limit']:.2f} | {row['throttled_queue']:,} | {row['throttled_account']:,} | "
              f"{row['send_retries']:,} | {row['cpu_us_per_message']:,.0f} |")  # fmt: skip

    print_pace(result["pace"], result["pace_scale"])


def print_pace(rows: list[dict[str, Any]], scale: float) -> None:
    print(f"\nThe send pace, Azure slowed {scale:g}x (queue {2000 / scale:g} msg/s) with the default retry settings "
          f"slowed as much (first backoff {scale:g} s: Azure's 1 s), window 64 a chunk\n")  # fmt: skip
    print("| case | pace | messages | msg/s, whole run | of limit, whole run | 503s | sends retried | on/off |")
    print("|---|---|---|---|---|---|---|---|")
    off: dict[int, float] = {}
    for row in rows:
        rate = row["messages_per_second"]
        off.setdefault(row["chunks"], rate)
        ratio = f"{rate / off[row['chunks']]:.2f}x" if row["pace"] == "on" else ""
        print(f"| {row['case']} | {row['pace']} | {row['messages']:,} | {rate:,.0f} | {rate / row['limit']:.2f} | "
              f"{row['throttled_queue']:,} | {row['send_retries']:,} | {ratio} |")  # fmt: skip


if __name__ == "__main__":
    main()
