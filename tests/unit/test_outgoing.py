"""A chunk's messages in any shape, read back by the consumer's side (fanout/messages.py): every item once,
in order, under its seq; no batch over its limits; checkpoints map between items and messages."""

from __future__ import annotations

import base64
import json
from xml.sax.saxutils import escape

from hypothesis import given, settings
from hypothesis import strategies as st

from core.contract import chunk_lines, decode_chunk, encode_chunk
from core.delivery import MAX_MESSAGE_BYTES, Delivery, item_room, least_batch_bytes
from fanout.messages import unpack
from ingestion.outgoing import plain, shaped

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
items = st.one_of(texts, st.fixed_dictionaries({"id": texts, "n": st.integers(-(2**70), 2**70)}))


def encoded(text: str, encoding: str) -> int:
    raw = text.encode("utf-8")
    return len(base64.b64encode(raw)) if encoding == "base64" else len(escape(text).encode("utf-8"))


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    batch_input = draw(st.none() | st.fixed_dictionaries({"job": texts}))
    delivery = Delivery(draw(st.integers(2, 60)), MAX_MESSAGE_BYTES, batch_input, draw(st.booleans()))
    least = least_batch_bytes(delivery, 8)
    return Delivery(delivery.batch_max_items, draw(st.integers(least, least + 2000) | st.just(MAX_MESSAGE_BYTES)),
                    batch_input, delivery.envelope)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    chunk=st.lists(items, max_size=80),
    delivery=deliveries() | st.just(Delivery(envelope=True)),
    first=st.integers(0, 10**12),
)
def test_every_item_once_in_order_under_its_seq_within_the_batch_limits(chunk, delivery, first):
    data = encode_chunk(chunk)
    texts_ = decode_chunk(data, len(chunk))
    outgoing = shaped(chunk_lines(data), texts_, delivery, "run-1", first)

    unpacked = [unpack(message, batched=delivery.batched, envelope=delivery.envelope) for message in outgoing.messages]
    assert [item for message in unpacked for item in message.items] == texts_  # every item once, in order
    seqs = [first + start if delivery.envelope else None for start in (outgoing.starts or [])]
    assert [message.first_seq for message in unpacked] == seqs
    for message, text in zip(unpacked, outgoing.messages, strict=True):
        assert 1 <= len(message.items) <= delivery.batch_max_items
        # within the limit in both encodings: the cut is the same whichever QUEUE_MESSAGE_ENCODING is set now
        assert (
            len(message.items) == 1 or max(encoded(text, way) for way in ("base64", "none")) <= delivery.batch_max_bytes
        )
        assert message.run_id == ("run-1" if delivery.envelope else None)
        assert message.batch_input == (delivery.batch_input if delivery.batched else None)
        json.loads(text)  # each a JSON object a consumer parses as it is
    for position, start in enumerate(outgoing.starts or []):  # a checkpoint names a message's first item
        assert outgoing.items_before(position) == start and outgoing.message_of(start) == position
        assert outgoing.keys[position] == texts_[start]  # routed by its first item, as that ID alone would be
    assert outgoing.items_before(len(outgoing.messages)) == len(chunk)
    assert outgoing.message_of(len(chunk)) == len(outgoing.messages)


@settings(max_examples=40, deadline=None)
@given(delivery=deliveries(), encoding=st.sampled_from(["base64", "none"]), fill=st.sampled_from(["a", "&", "é"]))
def test_an_item_as_big_as_its_room_still_fits_a_message_alone(delivery, encoding, fill):
    room = item_room(delivery, "r" * 63, encoding)
    low, high = 0, room  # the longest string of `fill` whose JSON takes at most `room` encoded
    while low < high:
        middle = (low + high + 1) // 2
        fits = encoded(json.dumps(fill * middle, ensure_ascii=False), encoding) <= room
        low, high = (middle, high) if fits else (low, middle - 1)
    line = json.dumps(fill * low, ensure_ascii=False)
    outgoing = shaped([line], [fill * low], delivery, "r" * 63, 10**18)
    assert encoded(outgoing.messages[0], encoding) <= MAX_MESSAGE_BYTES


def test_plain_messages_map_items_to_themselves():
    outgoing = plain(["a", "b"])
    assert outgoing.items_before(1) == 1 and outgoing.message_of(2) == 2 and outgoing.keys == ["a", "b"]
    reference = '{"claim_check": {"container": "large-messages", "blob": "r/000000-1", "bytes": 70000}}'
    assert plain(["a", reference], ["a", "b" * 70_000]).keys == ["a", "b" * 70_000]  # routed as its ID would be
