"""What the app writes and how it is named: the one contract between `chunking/` and `ingestion/`.

- A run id: 1-63 letters, digits, `.`, `_`, `-`, starting with a letter or digit and not ending in `.`
  (Azure trims a trailing dot from blob names, so `x.` and `x` would collide).
- A chunk is `{run_id}/{index:06d}.jsonl` in the chunk container: UTF-8, one JSON value a line, each
  the exact text the source wrote for an item, without its insignificant whitespace (core/json_items.py).
  A JSON string line becomes its string as the message; any other value is sent as its text.
  The blob's metadata carries the number of lines, so the reader can tell a chunk cut short, the position in
  the source of its first line (items before it in the run: a message envelope's `seq`), and the run's
  generation (a run_id used again after a purge is another generation: what the earlier one left in
  flight, a trigger's delivery or a redrive message, is told apart and dropped).
- In the runs container: `{run_id}/run.json` (the run record), `{run_id}/chunks/{index:06d}` (a
  chunk's status), `{run_id}/slots/{n:04d}` (a `max_concurrency` slot), `{run_id}/sweeps.json` (what
  the sweeper did), `{run_id}/backlog.json` (its chunks' last looks at a backlog they wait on);
  `{run_id}/stop.json` once the run is cancelled or has failed past its tolerance (what chunking and
  every chunk read at their checkpoints), `{run_id}/finished.json` once its one completion event is
  sent (written if-none-match: the one writer sends it); and the run index,
  `_index/{13 digits}-{run_id}`, the digits 10**13 - 1 minus the run's creation in Unix milliseconds,
  so that a listing, which is in name order, is newest first; `_keys/continuation`, the key that signs
  the list's continuation tokens (made once, by whoever lists first). `_` starts no run id.
  In the large-message container: `{run_id}/{generation}/{index:06d}/{line:06d}.json`, its metadata the
  time-to-live its message was sent with (a purge keeps it while that message may be read).
- On the control queue: a `Continuation`, JSON `{"run_id", "resume": {"page", "skip", "skipped_crc"}}`. On the redrive
  queue: a chunk to redrive, JSON `{"run_id", "index", "generation"}` (`ChunkRef.redrive_message`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import ChunkError, ContractError
from core.json_items import JsonItemsError, json_value_text

COUNT_METADATA = "message_count"
GENERATION_METADATA = "run_generation"
FIRST_METADATA = "first_item"  # the position in the source of the chunk's first item (an envelope's `seq`)
TTL_METADATA = "message_ttl"  # a claim-check blob's: the time-to-live, in seconds, of the message that names it
SERVICE_DEFAULT_TTL = 7 * 24 * 3600  # a message's time-to-live when Put Message names none
_GENERATION = re.compile(r"[0-9a-f]{1,32}")
RUN_ID_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9_-])?"
_RUN_ID = RUN_ID_PATTERN
RUN_ID_RULE = (
    "run_id must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit "
    "and not ending in '.'"
)
RUN_ID_JSON_PATTERN = f"^{_RUN_ID}$"  # the rule as a JSON Schema (ECMA-262) pattern: `$` ends the text there
_INDEX_DIGITS = 6  # a chunk's number is written with at least this many digits
MAX_CHUNK_INDEX = 10**12 - 1  # and is at most this (a name, a redrive message and a status all agree)
_RUN_ID_PATTERN = re.compile(_RUN_ID)
_CHUNK_NAME = re.compile(rf"(?P<run_id>{_RUN_ID})/(?P<index>[0-9]{{6,12}})\.jsonl")


def is_run_id(value: object) -> bool:
    return isinstance(value, str) and _RUN_ID_PATTERN.fullmatch(value) is not None


_encode_string = json.JSONEncoder(ensure_ascii=False).encode
_encode_value = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True, order=True)
class ChunkRef:
    """A chunk of a run; `generation` (not part of its identity) is the run's, where it is known ("": a
    run, blob or message from before generations were kept)."""

    run_id: str
    index: int
    generation: str = field(default="", compare=False)

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
        match = _CHUNK_NAME.fullmatch(name)
        ref = None if match is None else cls(match["run_id"], int(match["index"]))
        if ref is None or ref.blob_name != name:  # only the one name chunking writes: no look-alikes
            raise ChunkError(f"{name[:200]!r} is not a chunk blob name (expected RUN_ID/NNNNNN.jsonl)")
        return ref

    @property
    def status_blob(self) -> str:
        """The chunk's status, in the runs container."""
        return f"{self.run_id}/chunks/{self.padded_index}"

    def claim_check_blob(self, line: int) -> str:
        """Where an oversized message of this chunk (0-based line) is kept, in the large-message container."""
        generation = f"{self.generation}/" if self.generation else ""
        return f"{self.run_id}/{generation}{self.padded_index}/{line:06d}.json"

    def redrive_message(self) -> str:
        """The redrive queue's message: ingest this chunk (of this generation of its run) again, from its
        checkpoint."""
        return json.dumps({"run_id": self.run_id, "index": self.index, "generation": self.generation})

    @classmethod
    def from_redrive_message(cls, body: bytes) -> ChunkRef:
        value = _run_message(body, "a chunk redrive")
        index = value.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_CHUNK_INDEX:
            raise ContractError(f"a chunk redrive names a chunk index, got {body[:100]!r}")
        generation = value.get("generation", "")
        if not isinstance(generation, str) or (generation and not _GENERATION.fullmatch(generation)):
            raise ContractError(f"a chunk redrive's generation is 1-32 hex digits, got {body[:100]!r}")
        return cls(value["run_id"], index, generation)


def run_prefix(run_id: str) -> str:
    """Every blob of a run starts with this, in each container."""
    return f"{run_id}/"


def run_record_blob(run_id: str) -> str:
    return f"{run_id}/run.json"


def chunk_statuses_prefix(run_id: str) -> str:
    return f"{run_id}/chunks/"


def sweep_log_blob(run_id: str) -> str:
    """What the sweeper did for the run, in the runs container."""
    return f"{run_id}/sweeps.json"


def slots_prefix(run_id: str) -> str:
    """The run's `max_concurrency` slots, in the runs container: `{run_id}/slots/NNNN`."""
    return f"{run_id}/slots/"


def slot_blob(run_id: str, slot: int) -> str:
    return f"{slots_prefix(run_id)}{slot:04d}"


def backlog_blob(run_id: str) -> str:
    """The last looks at the target queues of a run waiting on its `max_backlog`, in the runs container."""
    return f"{run_id}/backlog.json"


def run_stop_blob(run_id: str) -> str:
    return f"{run_id}/stop.json"


def run_event_mark_blob(run_id: str) -> str:
    return f"{run_id}/finished.json"


RUN_INDEX_PREFIX = "_index/"
CONTINUATION_KEY_BLOB = "_keys/continuation"
_INDEX_LATEST = 10**13 - 1  # Unix milliseconds in the year 2286
_INDEX_NAME = re.compile(rf"{re.escape(RUN_INDEX_PREFIX)}(?P<inverted>[0-9]{{13}})-(?P<run_id>{_RUN_ID})")


def run_index_blob(created_ms: int, run_id: str) -> str:
    """The run's entry in the index: newer runs sort first."""
    return f"{RUN_INDEX_PREFIX}{_INDEX_LATEST - created_ms:013d}-{run_id}"


def parse_run_index_blob(name: str) -> tuple[int, str] | None:
    """(creation in Unix milliseconds, run id) of an index entry; None for a name that is not one."""
    match = _INDEX_NAME.fullmatch(name)
    return None if match is None else (_INDEX_LATEST - int(match["inverted"]), match["run_id"])


def partition_queue_names(queue: str, partitions: int) -> list[str]:
    """The target queues: `queue`, or `queue-0` … `queue-{N-1}` with N partitions."""
    return [queue] if partitions == 1 else [f"{queue}-{partition}" for partition in range(partitions)]


MAX_PAGE_CHARS = 16_384  # a resume position's page (a cursor, a next link) as JSON, at most: a continuation
# carries it in a queue message, which holds 64 KiB after base64 (48 KiB of JSON)


@dataclass(frozen=True)
class ResumePosition:
    """Where reading the source resumes: a page (its URL, cursor or number; None: the first), the items to
    skip in it, and the CRC-32 of those items' texts as they were read (`skipped_crc`, chunking/source.py):
    a page that answers them otherwise is not resumed within, since that would lose or repeat items."""

    page: str | int | None = None
    skip: int = 0
    skipped_crc: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"page": self.page, "skip": self.skip, "skipped_crc": self.skipped_crc}

    @classmethod
    def from_json(cls, value: object) -> ResumePosition:
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("page"), str | int | None)
            or isinstance(value.get("page"), bool)
            or not _whole(value.get("skip"))
            or not (value.get("skipped_crc") is None or _whole(value["skipped_crc"]))
        ):
            raise ContractError(f"not a resume position: {str(value)[:200]}")
        return cls(value["page"], value["skip"], value.get("skipped_crc"))


def _whole(value: object) -> bool:
    """A whole number, not negative, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class Continuation:
    """The control queue's message: carry on chunking `run_id` from `resume`."""

    run_id: str
    resume: ResumePosition

    def encode(self) -> str:
        return json.dumps({"run_id": self.run_id, "resume": self.resume.to_json()})

    @classmethod
    def decode(cls, body: bytes) -> Continuation:
        value = _run_message(body, "a continuation")
        return cls(value["run_id"], ResumePosition.from_json(value.get("resume")))


def _run_message(body: bytes, what: str) -> dict[str, Any]:
    """A queue message's JSON object, which names a valid run_id."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise ContractError(f"{what} must be JSON, got {body[:100]!r}") from None
    if not isinstance(value, dict) or not is_run_id(value.get("run_id")):
        raise ContractError(f"{what} names a valid run_id, got {body[:100]!r}")
    return value


def encode_chunk(items: Iterable[Any]) -> bytes:
    """One JSON line per item; strings stay strings, everything else is compact JSON."""
    return "".join(
        (_encode_string(item) if isinstance(item, str) else _encode_value(item)) + "\n" for item in items
    ).encode("utf-8")


def first_item(metadata: Mapping[str, str] | None) -> int | None:
    """The source position of the chunk's first item, as chunking wrote it; None for a chunk without one."""
    return _metadata_number(metadata, FIRST_METADATA, 19, "position")


def expected_count(metadata: Mapping[str, str] | None) -> int | None:
    """The line count chunking wrote in the blob's metadata; None for a chunk written without one."""
    return _metadata_number(metadata, COUNT_METADATA, 9, "count")


def _metadata_number(metadata: Mapping[str, str] | None, name: str, digits: int, what: str) -> int | None:
    value = (metadata or {}).get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > digits:
        raise ChunkError(f"the chunk's {name} metadata is not a {what}: {value[:40]!r}")
    return int(value)


def _message(line: str) -> str:
    """A chunk line's message: a string's value (which UTF-8 must be able to carry), else the value's text."""
    if not line.startswith('"'):
        return json_value_text(line)
    value = json.loads(line)
    if not isinstance(value, str):
        raise ValueError("a string that is not one")
    if "\\u" in line:
        value.encode("utf-8")
    return value


def chunk_lines(data: bytes) -> list[str]:
    """A chunk's lines, each an item's JSON as chunking wrote it (check the chunk with `decode_chunk` first)."""
    lines = data.decode("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


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
    for number, text_line in enumerate(lines, start=1):
        try:
            message = _message(text_line)
        except UnicodeEncodeError:
            raise ChunkError(f"line {number} holds a lone surrogate, which no message can carry") from None
        except (ValueError, JsonItemsError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ChunkError(f"line {number} is not valid JSON ({reason}): {text_line[:200]!r}") from None
        messages.append(message)
    if expected_count is not None and len(messages) != expected_count:
        raise ChunkError(f"chunk holds {len(messages)} lines but was written with {expected_count}")
    return messages
