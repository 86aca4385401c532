"""Faults injected and survived, as the README's Reliability table (the scenarios: testkit/fault_scenarios.py).

.venv/bin/python -m benchmarks.reliability [--json] [SCENARIO …]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

from fanout.azurite import start_azurite
from testkit.fault_scenarios import SCENARIOS, Lab


@contextmanager
def lab_on_fresh_azurite() -> Iterator[Lab]:
    azurite = start_azurite()
    try:
        yield Lab(azurite)
    finally:
        azurite.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON line per scenario instead of the table")
    parser.add_argument("scenario", nargs="*", choices=[*SCENARIOS, []], help="default: all")
    args = parser.parse_args()
    print("| fault injected | what happened | final state | source IDs | lost | duplicates |")
    print("|---|---|---|---|---|---|")
    for name in args.scenario or SCENARIOS:
        with lab_on_fresh_azurite() as lab:
            outcome = SCENARIOS[name](lab)
            if args.json:
                print(json.dumps({"scenario": name, **asdict(outcome)}), flush=True)
            else:
                o = outcome
                print(f"| {o.fault} | {o.what_happened} | {o.state} | {o.source_ids:,} | {o.lost} | {o.duplicates} |",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
