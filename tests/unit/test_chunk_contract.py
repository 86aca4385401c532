"""The chunk contract between chunking/ and ingestion/, without storage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.contract import ChunkRef, decode_chunk, encode_chunk
from core.errors import ChunkError, ContractError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=8,
)


def test_chunk_names_sort_in_chunk_order_and_parse_back():
    refs = [ChunkRef("run-1", index) for index in (0, 9, 10, 123_456)]
    names = [ref.blob_name for ref in refs]
    assert names == sorted(names) == ["run-1/000000.jsonl", "run-1/000009.jsonl", "run-1/000010.jsonl",
                                      "run-1/123456.jsonl"]  # fmt: skip
    assert [ChunkRef.parse(f"chunks/{name}", "chunks") for name in names] == refs


@pytest.mark.parametrize(
    "name",
    ["run-1/0.jsonl", "run-1/000001.json", "000001.jsonl", "a/b/000001.jsonl", "run-1/0000001.jsonl",
     "run-1/\u0660\u0660\u0660\u0660\u0660\u0661.jsonl", "run.\n/000001.jsonl", "x./000001.jsonl"],
)  # fmt: skip
def test_a_blob_that_is_not_a_chunk_is_refused(name):
    with pytest.raises(ChunkError):
        ChunkRef.parse(name, "chunks")


def test_a_chunk_redrive_message_names_its_chunk():
    ref = ChunkRef("run-1", 123_456)
    assert ChunkRef.from_redrive_message(ref.redrive_message().encode()) == ref


@pytest.mark.parametrize(
    "body",
    [b"", b"[" * 5000, b"[]", b'{"index": 1}', b'{"run_id": "x.", "index": 1}', b'{"run_id": "x", "index": -1}',
     b'{"run_id": "x", "index": true}', b'{"run_id": "x", "index": "1"}'],
)  # fmt: skip
def test_a_redrive_message_that_names_no_chunk_is_refused(body):
    with pytest.raises(ContractError):
        ChunkRef.from_redrive_message(body)


@given(st.lists(st.text()))
def test_string_items_come_back_as_themselves_in_order(items):
    assert decode_chunk(encode_chunk(items), len(items)) == items


@given(st.lists(json_values))
def test_any_json_item_survives_the_chunk(items):
    decoded = decode_chunk(encode_chunk(items), len(items))
    assert [
        text if isinstance(item, str) else json.loads(text) for item, text in zip(items, decoded, strict=True)
    ] == items


@pytest.mark.parametrize(
    ("data", "count", "error"),
    [
        (b'"a"\n\xff\xfe\n', 2, "chunk is not UTF-8 (line 2"),
        (b'"a"\n{broken\n', 2, "line 2 is not valid JSON"),
        (b'"a"\n"b"\n', 3, "chunk holds 2 lines but was written with 3"),
    ],
)
def test_a_malformed_chunk_names_what_is_wrong(data, count, error):
    with pytest.raises(ChunkError, match=error.replace("(", r"\(")):
        decode_chunk(data, count)
