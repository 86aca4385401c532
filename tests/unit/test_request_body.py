"""Any JSON object a strict parser reads, within batch_input's size and depth, is a batch_input the app
takes and keeps exactly, as the OpenAPI document's body schema says it does (Hypothesis)."""

from __future__ import annotations

import json

import jsonschema
from hypothesis import assume, given
from hypothesis import strategies as st

from api.openapi import openapi_document
from chunking.request import BATCH_INPUT_MAX_DEPTH, parse_ingestion_request
from core.delivery import BATCH_INPUT_MAX_BYTES
from core.settings import Settings

SETTINGS = Settings.from_env({})
BODY_SCHEMA = jsonschema.Draft202012Validator(
    openapi_document(SETTINGS)["paths"]["/api/ingestions"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]
)  # fmt: skip
scalars = (
    st.none() | st.booleans() | st.text(max_size=20) | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers() | st.integers(1, 4300).map(lambda digits: int("9" * digits))  # up to int()'s own cap
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), values, max_size=4))
def test_any_strict_json_object_within_the_bounds_is_taken_as_written(batch_input):
    assume(_depth(batch_input) <= BATCH_INPUT_MAX_DEPTH)
    assume(len(json.dumps(batch_input, ensure_ascii=False, separators=(",", ":")).encode()) <= BATCH_INPUT_MAX_BYTES)
    body = {"batch_max_items": 2, "batch_input": batch_input}
    request = parse_ingestion_request(json.dumps(body).encode(), SETTINGS)
    assert request.batch_input == batch_input and BODY_SCHEMA.is_valid(body)


def _depth(value: object) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max(map(_depth, children), default=0)
