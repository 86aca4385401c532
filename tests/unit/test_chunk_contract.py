"""The chunk contract between chunking/ and ingestion/, without storage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.contract import MAX_CHUNK_INDEX, ChunkRef, chunk_statuses_prefix, decode_chunk, encode_chunk
from core.errors import ChunkError, ContractError
from core.run_store import _STATUS_NAME

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


run_ids = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9_-])?", fullmatch=True)
generations = st.from_regex(r"[0-9a-f]{1,32}", fullmatch=True) | st.just("")


@given(run_ids, st.integers(0, MAX_CHUNK_INDEX), generations)
def test_every_chunk_index_and_generation_round_trips_through_every_name(run_id, index, generation):
    ref = ChunkRef(run_id, index, generation)
    assert ChunkRef.parse(f"chunks/{ref.blob_name}", "chunks") == ref
    again = ChunkRef.from_redrive_message(ref.redrive_message().encode())
    assert (again, again.generation) == (ref, generation)
    status = ref.status_blob.removeprefix(chunk_statuses_prefix(run_id))
    assert _STATUS_NAME.fullmatch(status) and int(status) == index
    assert ref.claim_check_blob(3).startswith(f"{run_id}/{generation}/" if generation else f"{run_id}/")


@given(
    st.text(max_size=40).filter(
        lambda text: not text or any(c not in "0123456789abcdef" for c in text) or len(text) > 32
    )
)
def test_a_redrive_message_with_another_generation_shape_is_refused(generation):
    body = json.dumps({"run_id": "run-1", "index": 1, "generation": generation}).encode()
    if generation == "":
        assert ChunkRef.from_redrive_message(body).generation == ""
    else:
        with pytest.raises(ContractError, match="generation"):
            ChunkRef.from_redrive_message(body)


def test_a_redrive_message_past_the_largest_chunk_index_is_refused():
    with pytest.raises(ContractError):
        ChunkRef.from_redrive_message(json.dumps({"run_id": "r", "index": MAX_CHUNK_INDEX + 1}).encode())


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
