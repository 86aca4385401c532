"""A chunk's queue messages in the run's shape (core/delivery.py), and the map between messages and items.

A chunk's status counts items (`sent`: every item before it is in the queue); the send window counts
messages. A batch never spans chunks and is cut at the same places on every build of the same chunk, so
a checkpoint (always at a message's first item) names the same message on a resume or a redrive.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from core.delivery import Delivery, stored_size


@dataclass(frozen=True)
class Outgoing:
    """`messages[k]` starts with item `starts[k]` (None: one item a message) and is routed by `keys[k]`, the
    text of that item (the same ID goes to the same queue, batched or not)."""

    messages: Sequence[str]
    keys: Sequence[str]
    items: int
    starts: Sequence[int] | None = None

    def items_before(self, message: int) -> int:
        """Items in messages[:message]."""
        if self.starts is None or message >= len(self.messages):
            return message if self.starts is None else self.items
        return self.starts[message]

    def message_of(self, item: int) -> int:
        """The message holding `item` (a checkpoint names the first item of one: it resumes there)."""
        if self.starts is None:
            return item
        return len(self.messages) if item >= self.items else bisect.bisect_right(self.starts, item) - 1


def plain(messages: Sequence[str], texts: Sequence[str] | None = None) -> Outgoing:
    """One item a message, each routed by its item's text (`texts`; default the message: a claim-checked
    item goes to the queue its ID would, not its reference's)."""
    return Outgoing(messages, messages if texts is None else texts, len(messages))


def shaped(lines: Sequence[str], texts: Sequence[str], delivery: Delivery, run_id: str, first_seq: int) -> Outgoing:
    """The messages of a chunk whose items are `lines` (JSON, as in the chunk; a claim-checked item is its
    reference object) and whose texts are `texts`; item i is the source's item `first_seq + i`.

    A batch closes at `batch_max_items`, or before the item that would take it past `batch_max_bytes`
    in either encoding (base64 or XML-escaped, whichever is larger); a batch holds at least one item (one
    too big for the limit goes alone, up to the queue's 64 KiB)."""
    if not delivery.batched:
        enveloped = [f"{delivery.prefix(run_id, first_seq + i)}{line}}}" for i, line in enumerate(lines)]
        return Outgoing(enveloped, texts, len(lines), range(len(lines)))
    messages: list[str] = []
    keys: list[str] = []
    starts: list[int] = []
    suffix = delivery.suffix
    limit = delivery.batch_max_bytes
    parts: list[str] = []
    raw = escaped = 0
    head_growth: int | None = None  # what escaping adds to a head: the same for each, whatever its seq

    def close() -> None:
        messages.append("".join(parts) + suffix)

    for position, line in enumerate(lines):
        written = len(line.encode("utf-8"))
        size = written + 1  # and a comma, or the suffix's first byte
        grown = size + len(escape(line).encode("utf-8")) - written
        if parts and (len(parts) > delivery.batch_max_items or stored_size(raw + size, escaped + grown) > limit):
            close()
            parts = []
        if not parts:
            head = delivery.prefix(run_id, first_seq + position)
            parts.append(head)
            head_bytes = len(head.encode("utf-8"))
            if head_growth is None:
                head_growth = len(escape(head).encode("utf-8")) - head_bytes
            raw = head_bytes + len(suffix) - 1
            escaped = raw + head_growth
            starts.append(position)
            keys.append(texts[position])
            parts.append(line)
        else:
            parts.append("," + line)
        raw += size
        escaped += grown
    if parts:
        close()
    return Outgoing(messages, keys, len(lines), starts)
