"""`python -m fanout …` in a child process, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from fanout.azurite import PROJECT_ROOT


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout", *args], cwd=PROJECT_ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
