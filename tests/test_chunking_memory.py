"""Chunking's memory stays bounded whatever the source sends: each hostile answer is chunked in a
process of its own and its peak RSS read back (VmHWM). Every cap fails the run with a reason naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from fanout.azurite import PROJECT_ROOT
from fanout.demo_api import DemoApi, Faults
from testkit.loopback_api import LoopbackApi

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


# --- I6: any answer the settings allow, chunked in bounded memory -----------------------------------


def _stacked_gzip_bomb(inflated: int) -> bytes:
    """gzip of gzip of `inflated` zero bytes, made a piece at a time (a few KB; never held whole)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    outer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros, body = bytes(1 << 20), []
    for _ in range(inflated >> 20):
        body.append(outer.compress(inner.compress(zeros)))
    body.append(outer.compress(inner.flush()))
    body.append(outer.flush())
    return b"".join(body)


def _answer_of(shape: str, mode: str) -> tuple[bytes, dict[str, str]]:
    """An answer near a limit of the default settings, as the source sends it, and its headers."""
    just_under_item = 8 * MB - 64  # CHUNK_MAX_BYTES
    items: bytes = {
        "a 16 MiB page of empty objects": b",".join([b"{}"] * ((16 * MB - 64) // 3)),
        "an 8 MiB item of empty arrays": b"[" + b",".join([b"[]"] * (just_under_item // 3)) + b"]",
        "an 8 MiB item of objects": b'{"a":[' + b",".join([b"{}"] * (just_under_item // 3)) + b"]}",
        "three 8 MiB strings": b",".join([b'"' + b"x" * just_under_item + b'"'] * 3),
        "16 MiB of long numbers": b",".join([b"1" * 4000 + b"e400"] * (16 * MB // 4006)),
        "nesting just under the limit": b",".join([b"[" * 60 + b"1" + b"]" * 60] * 50_000),
    }.get(shape, b"")
    body = b"[" + items + b"]" if mode == "none" else b'{"items": [' + items + b'], "next_cursor": null}'
    if shape == "an object of 3 million keys around its items":
        keys = b",".join(b'"k%d":0' % index for index in range(3_000_000))
        return b'{"items": ["a", "b"], ' + keys + b', "next_cursor": null}', {}
    if shape == "gzip, gzip inflating to 1 GiB":
        return _stacked_gzip_bomb(1 << 30), {"Content-Encoding": "gzip, gzip"}
    return body, {}


ANSWER_SHAPES = [
    "a 16 MiB page of empty objects", "an 8 MiB item of empty arrays", "an 8 MiB item of objects",
    "three 8 MiB strings", "16 MiB of long numbers", "nesting just under the limit", "gzip, gzip inflating to 1 GiB",
    "an object of 3 million keys around its items",
]  # fmt: skip


@settings(
    max_examples=max(1, int(os.environ.get("MEMORY_EXAMPLES", "0"))),
    # `make test` runs the examples below; MEMORY_EXAMPLES (`make soak`) draws that many more
    phases=[Phase.explicit] if not int(os.environ.get("MEMORY_EXAMPLES", "0")) else list(Phase),
    deadline=None,
    derandomize=os.environ.get("SOAK") != "1",
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(shape=st.sampled_from(ANSWER_SHAPES), mode=st.sampled_from(["none", "cursor"]))
@example(shape="gzip, gzip inflating to 1 GiB", mode="cursor")  # the three the hostile review reported
@example(shape="a 16 MiB page of empty objects", mode="none")
@example(shape="three 8 MiB strings", mode="none")
@example(shape="an object of 3 million keys around its items", mode="none")  # found by a later review
def test_chunking_any_answer_the_settings_allow_peaks_under_300_mb(app_env, azurite, shape, mode):
    body, headers = _answer_of(shape, mode)
    source = LoopbackApi(lambda path, request_headers: (200, {"Content-Type": "application/json", **headers}, body))
    try:
        settings = CURSOR if mode == "cursor" else {"SOURCE_ITEMS_PATH": "items"} if "keys" in shape else {}
        result = chunk_in_child({**app_env, "AzureWebJobsStorage": azurite.connection_string, **settings,
                                 "SOURCE_URL": source.url}, 32_000)  # fmt: skip
    finally:
        source.stop()

    print(f"{shape} ({mode}): {result['state']}, peak RSS {result['peak_rss_mb']:.0f} MB")
    assert result["peak_rss_mb"] < PEAK_RSS_MB, result
    assert result["state"] == "chunked" or "Traceback" not in (result["error"] or "Traceback"), result
