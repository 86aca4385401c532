"""Chunking's memory stays bounded whatever the source sends: each hostile answer is chunked in a
process of its own and its peak RSS read back (VmHWM). Every cap fails the run with a reason naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from fanout.azurite import PROJECT_ROOT
from fanout.demo_api import DemoApi, Faults

PEAK_RSS_MB = 300  # generous: chunking starts at ~65 MB
MB = 1 << 20
CURSOR = {"SOURCE_PAGINATION": "cursor", "SOURCE_ITEMS_PATH": "items"}


def chunk_in_child(env: dict[str, str], chunk_size: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "testkit.chunking_child", str(chunk_size)], cwd=PROJECT_ROOT,
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# what the source answers (DemoApi's options), the settings, the chunk size, and the outcome: the
# failure reason's words, or "chunked"
HOSTILE: dict[str, tuple[dict[str, Any], dict[str, str], int, str]] = {
    "40 KB of nested arrays": ({"count": 1, "faults": Faults(nested=20_000)}, {}, 5000, "SOURCE_MAX_DEPTH=64"),
    "nested arrays in a page": (
        {"count": 1, "pagination": "cursor", "faults": Faults(nested=20_000)}, CURSOR, 5000, "SOURCE_MAX_DEPTH=64"
    ),
    "100 MB error body": (
        {"count": 1, "faults": Faults(status=500, error_body=100 * MB)}, {"SOURCE_MAX_ATTEMPTS": "1"}, 5000,
        'answered 500 Internal Server Error: {"error": "xxx',
    ),
    "gzip page inflating to 100 MB": (
        {"count": 1, "pagination": "cursor", "faults": Faults(gzip_bomb=100 * MB)}, CURSOR, 5000,
        "SOURCE_MAX_PAGE_BYTES=16777216",
    ),
    "100 MB page": (
        {"count": 2_600_000, "pagination": "cursor", "page_size": 2_600_000}, CURSOR, 5000,
        "SOURCE_MAX_PAGE_BYTES=16777216",
    ),
    "one 100 MB item": ({"count": 1, "item_bytes": 100 * MB}, {}, 5000, "CHUNK_MAX_BYTES=8388608"),
    "32,000-item chunks of 64 KiB items": ({"count": 3000, "item_bytes": 64 << 10}, {}, 32_000, "chunked"),
}  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, marks=[pytest.mark.own_azurite] if case.startswith("32,000") else []) for case in HOSTILE],
)
def test_chunking_peak_memory_stays_bounded_and_each_cap_names_its_setting(app_env, azurite, case):
    api, settings, chunk_size, outcome = HOSTILE[case]
    source = DemoApi(**api).start()
    try:
        result = chunk_in_child({**app_env, "AzureWebJobsStorage": azurite.connection_string, **settings,
                                 "SOURCE_URL": source.url}, chunk_size)  # fmt: skip
    finally:
        source.stop()

    if outcome == "chunked":  # a chunk closes early at CHUNK_MAX_BYTES: 127 items of 64 KiB in 8 MiB
        assert (result["state"], result["messages"], result["chunks"]) == ("chunked", 3000, 24), result
    else:
        assert result["state"] == "failed" and outcome in result["error"], result
    assert result["peak_rss_mb"] < PEAK_RSS_MB, result
