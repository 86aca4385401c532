"""A run record written by a newer version of the app (a rolling deploy) still reads."""

from __future__ import annotations

import json

from core.run_store import _from_json


def test_a_run_record_with_a_field_this_version_does_not_know_still_reads():
    data = {"run_id": "r1", "source": "default", "chunk_size": 100, "state": "chunked", "max_concurrency": 2,
            "a_field_from_a_newer_version": {"x": 1}}  # fmt: skip

    record = _from_json(json.dumps(data).encode())

    assert (record.run_id, record.state, record.max_concurrency) == ("r1", "chunked", 2)
