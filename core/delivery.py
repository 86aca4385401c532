"""The shape of a run's queue messages: one item each as the source gave it (the default), or JSON
objects carrying several items (`batch_max_items`), an idempotency key (`envelope`: `run_id` and `seq`,
the item's 0-based position in the source's order), or both. The shape is the run's, kept in its record
from its start: a resume or a redrive builds the same messages with the same `seq`.

Shapes (items as chunk lines: an ID as a JSON string, an object item as the object):
- plain: the ID's text, or the item's JSON text;
- envelope: `{"run_id": R, "seq": N, "item": ITEM}`;
- batch: `{"run_id": R, "first_seq": N, "batch_input": {...}, "items": [ITEM, ...]}`, `run_id` and
  `first_seq` with `envelope` only, `batch_input` when the run has one.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from xml.sax.saxutils import escape

MAX_MESSAGE_BYTES = 64 * 1024  # a queue message, after encoding
BATCH_INPUT_MAX_BYTES = 8 * 1024  # `batch_input` as compact JSON
MAX_SEQ_DIGITS = 19  # a position in the source: SOURCE_MAX_ITEMS is far below 10**19
_json_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def base64_size(raw: int) -> int:
    """What `raw` bytes take base64 encoded."""
    return 4 * ((raw + 2) // 3)


def stored_size(raw: int, escaped: int) -> int:
    """A message's bytes as the queue stores it in the larger of the two encodings (`raw` its UTF-8 bytes,
    `escaped` its XML-escaped bytes): a measure that does not depend on QUEUE_MESSAGE_ENCODING."""
    return max(base64_size(raw), escaped)


@functools.lru_cache(maxsize=64)
def _quoted(run_id: str) -> str:
    return _compact(run_id)


def _compact(value: object) -> str:
    """Compact JSON that any message encoding carries: JSON escapes control characters itself, and the two
    non-characters XML cannot carry (U+FFFE, U+FFFF), which only a string can hold, are escaped here."""
    return _json_text(value).replace("\ufffe", "\\ufffe").replace("\uffff", "\\uffff")


@dataclass(frozen=True)
class Delivery:
    """How a run's items become queue messages; `batch_max_bytes` counts a message after encoding."""

    batch_max_items: int = 1
    batch_max_bytes: int = MAX_MESSAGE_BYTES
    batch_input: dict[str, Any] | None = None
    envelope: bool = False

    @property
    def plain(self) -> bool:
        """Each item is its own message, as the source gave it."""
        return self.batch_max_items == 1 and not self.envelope

    @property
    def batched(self) -> bool:
        return self.batch_max_items > 1

    def prefix(self, run_id: str, seq: int) -> str:
        """A message's text before its first item (each part serialized once, not once a message)."""
        head = f'{{"run_id":{_quoted(run_id)},' if self.envelope else "{"
        if not self.batched:
            return f'{head}"seq":{seq},"item":'
        if self.envelope:
            head += f'"first_seq":{seq},'
        return head + self._batch_input_member + '"items":['

    @cached_property
    def _batch_input_member(self) -> str:
        return "" if self.batch_input is None else f'"batch_input":{_compact(self.batch_input)},'

    @property
    def suffix(self) -> str:
        return "]}" if self.batched else "}"

    def overhead(self, run_id: str) -> int:
        """The most bytes (UTF-8, before encoding) a message adds around its items: with the longest `seq`."""
        return len((self.prefix(run_id, 10**MAX_SEQ_DIGITS - 1) + self.suffix).encode("utf-8"))


def item_room(delivery: Delivery, run_id: str, encoding: str) -> int:
    """The most an item (its JSON, encoded as `encoding` measures it) may take for its message, alone, to fit
    in MAX_MESSAGE_BYTES; a bigger one follows LARGE_MESSAGE_MODE."""
    if delivery.plain:
        return MAX_MESSAGE_BYTES
    wrapper = delivery.prefix(run_id, 10**MAX_SEQ_DIGITS - 1) + delivery.suffix
    if encoding == "base64":
        return (MAX_MESSAGE_BYTES // 4 * 3 - len(wrapper.encode("utf-8"))) // 3 * 4
    return MAX_MESSAGE_BYTES - len(escape(wrapper).encode("utf-8"))


def least_batch_bytes(delivery: Delivery, run_id_chars: int = 63) -> int:
    """The smallest `batch_max_bytes` that leaves room for an item: a message with the longest run id and
    `seq` around a 64-byte ID, as the queue stores it under the encoding that makes it larger (base64 grows
    any text by a third, XML escaping grows `&`, `<` and `>` up to five times: a batch_input may be either)."""
    text = delivery.prefix("r" * run_id_chars, 10**MAX_SEQ_DIGITS - 1) + "x" * 64 + delivery.suffix
    return stored_size(len(text.encode("utf-8")), len(escape(text).encode("utf-8")))
