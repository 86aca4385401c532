"""The consumer's side of the message shapes (docs/messages.md): a queue message back to its items.

Independent of the sending side (ingestion/outgoing.py): it reads a message as any JSON consumer would,
keeping each item's JSON text exactly as it stands in the message (a number such as `1e400` or an
escape such as `\\u00e9` is not re-written by a round trip through Python values).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class Unpacked:
    """A message's items in order, each as an unbatched message would hold it (an ID's text, any other
    value's JSON text as the source wrote it), and with an envelope its run and first `seq`."""

    items: list[str]
    run_id: str | None = None
    first_seq: int | None = None
    batch_input: object = None


def unpack(text: str, *, batched: bool, envelope: bool) -> Unpacked:
    """The items of a message of a run of this shape (a plain message is its one item). ValueError (or
    KeyError) for a message not of the shape."""
    if not batched and not envelope:
        return Unpacked([text])
    fields = _raw_fields(text)
    run_id = json.loads(fields["run_id"]) if envelope else None
    if not batched:
        return Unpacked([item_text(fields["item"])], run_id, json.loads(fields["seq"]))
    items = [item_text(raw) for raw in _raw_array(fields["items"])]
    first = json.loads(fields["first_seq"]) if envelope else None
    batch_input = json.loads(fields["batch_input"]) if "batch_input" in fields else None
    return Unpacked(items, run_id, first, batch_input)


def item_text(item: str) -> str:
    """What an unbatched message would hold for an item: a string's value, any other value's JSON text."""
    return json.loads(item) if item.startswith('"') else item


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _raw_fields(text: str) -> dict[str, str]:
    """A JSON object's members, each value as its raw JSON text."""
    at = _skip(text, 0)
    if text[at : at + 1] != "{":
        raise ValueError("a shaped message is a JSON object")
    at = _skip(text, at + 1)
    fields: dict[str, str] = {}
    while text[at : at + 1] != "}":
        key, at = _decoder.raw_decode(text, at)
        at = _skip(text, at)
        if text[at : at + 1] != ":":
            raise ValueError("expected ':' in a message object")
        start = _skip(text, at + 1)
        _, at = _decoder.raw_decode(text, start)
        fields[key] = text[start:at]
        at = _skip(text, at)
        if text[at : at + 1] == ",":
            at = _skip(text, at + 1)
    if _skip(text, at + 1) != len(text):
        raise ValueError("text after the message object")
    return fields


def _raw_array(text: str) -> list[str]:
    """A JSON array's elements, each as its raw JSON text."""
    at = _skip(text, 1)
    items: list[str] = []
    while text[at : at + 1] != "]":
        _, end = _decoder.raw_decode(text, at)
        items.append(text[at:end])
        at = _skip(text, end)
        if text[at : at + 1] == ",":
            at = _skip(text, at + 1)
    return items
