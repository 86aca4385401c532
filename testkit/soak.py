"""`make soak MINUTES=N`: the generated invariant tests, examples drawn afresh round after round, for N minutes.

Each round runs tests/test_invariants.py and the generated memory test with new random examples (SOAK=1:
Hypothesis shrinks what fails); its example database (.hypothesis/) is kept, so a failure found once is
replayed first in every later round and in `make test`. Stops at the first failure, which pytest prints as
the shrunk, readable example that reproduces it; exit 1 then, else 0 with the rounds and examples run.

    python -m testkit.soak --minutes 60
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from fanout.azurite import PROJECT_ROOT

TESTS = [
    "tests/test_invariants.py",
    "tests/test_chunking_memory.py::test_chunking_any_answer_the_settings_allow_peaks_under_300_mb",
]
PER_ROUND = {"INVARIANT_EXAMPLES": "25", "MEMORY_EXAMPLES": "2"}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to go on drawing examples")
    args = parser.parse_args()
    deadline = time.monotonic() + args.minutes * 60
    env = {**os.environ, "SOAK": "1", **PER_ROUND}
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", *TESTS, "-n", "0", "-q", "-p", "no:cacheprovider", "-x"],
            cwd=PROJECT_ROOT, env=env,
        )  # fmt: skip
        print(f"soak round {rounds}: exit {result.returncode} in {time.monotonic() - started:.0f} s", flush=True)
        if result.returncode != 0:
            return 1
    examples = rounds * (int(PER_ROUND["INVARIANT_EXAMPLES"]) + int(PER_ROUND["MEMORY_EXAMPLES"]))
    print(f"soak: {rounds} rounds, {examples} generated examples, nothing found in {args.minutes:g} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
