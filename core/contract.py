"""The chunk blob and its name: the one contract between `chunking/` and `ingestion/`.

A chunk is `{run_id}/{index:06d}.jsonl` in the chunk container: UTF-8, one JSON value a line.
A JSON string line becomes its string as the message; any other value is sent as its compact JSON.
The blob's metadata carries the number of lines, so the reader can tell a chunk cut short.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.errors import ChunkError

COUNT_METADATA = "message_count"
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_INDEX_DIGITS = 6
_NAME = re.compile(r"^(?P<run_id>[A-Za-z0-9][A-Za-z0-9._-]{0,62})/(?P<index>\d{6,})\.jsonl$")
_encode_string = json.JSONEncoder(ensure_ascii=False).encode
_encode_value = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True, order=True)
class ChunkRef:
    run_id: str
    index: int

    @property
    def padded_index(self) -> str:
        return f"{self.index:0{_INDEX_DIGITS}d}"

    @property
    def blob_name(self) -> str:
        return f"{self.run_id}/{self.padded_index}.jsonl"

    @classmethod
    def parse(cls, name: str, container: str) -> ChunkRef:
        """Accepts the blob name with or without its container (the host passes `container/name`)."""
        name = name.removeprefix(container + "/")
        match = _NAME.match(name)
        if match is None:
            raise ChunkError(f"{name!r} is not a chunk blob name (expected RUN_ID/NNNNNN.jsonl)")
        return cls(match["run_id"], int(match["index"]))


def run_prefix(run_id: str) -> str:
    return f"{run_id}/"


def encode_chunk(items: Iterable[Any]) -> bytes:
    """One JSON line per item; strings stay strings, everything else is compact JSON."""
    return "".join(
        (_encode_string(item) if isinstance(item, str) else _encode_value(item)) + "\n" for item in items
    ).encode("utf-8")


def decode_chunk(data: bytes, expected_count: int | None) -> list[str]:
    """The message texts of a chunk, in order; raises ChunkError naming the first bad line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ChunkError(f"chunk is not UTF-8 (line {line}, byte {exc.start})") from None
    lines = text.split("\n")  # not splitlines(): JSON escapes only \n, and U+2028 or U+0085 may stand raw
    if lines[-1] == "":
        lines.pop()
    messages: list[str] = []
    for number, line in enumerate(lines, start=1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ChunkError(f"line {number} is not valid JSON ({exc.msg}): {line[:200]!r}") from None
        messages.append(value if isinstance(value, str) else line)
    if expected_count is not None and len(messages) != expected_count:
        raise ChunkError(f"chunk holds {len(messages)} lines but was written with {expected_count}")
    return messages
