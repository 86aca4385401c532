"""Any JSON object a strict parser reads, within batch_input's size and depth, is a batch_input the app
takes and keeps exactly, as the OpenAPI document's body schema says it does; and any body at all is taken by
both or by neither (Hypothesis)."""

from __future__ import annotations

import json

import jsonschema
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from api.openapi import openapi_document
from chunking.request import BATCH_INPUT_MAX_DEPTH, FIELD_NAMES, parse_ingestion_request
from core.delivery import BATCH_INPUT_MAX_BYTES, MAX_MESSAGE_BYTES, Delivery, least_batch_bytes
from core.errors import RequestError
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
    assume(_size(batch_input) <= BATCH_INPUT_MAX_BYTES)
    body = {"batch_max_items": 2, "batch_input": batch_input}
    request = parse_ingestion_request(json.dumps(body).encode(), SETTINGS)
    assert request.batch_input == batch_input and BODY_SCHEMA.is_valid(body)


def _size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _depth(value: object) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max(map(_depth, children), default=0)


# The class behind each body the fuzzing found the schema and the app to disagree on (a long integer, null,
# a source's name in another case): any body of the fields, any value each, is accepted by both or neither.
NAMED = {  # a batching default or none: null means each
    items: Settings.from_env({"SOURCE_KAFKA__URL": "http://127.0.0.1:1/ids", "MESSAGE_BATCH_MAX_ITEMS": items})
    for items in ("1", "10")
}
SCHEMAS = {
    items: jsonschema.Draft202012Validator(
        openapi_document(settings)["paths"]["/api/ingestions"]["post"]["requestBody"]["content"]["application/json"][
            "schema"]
    ) for items, settings in NAMED.items()
}  # fmt: skip
LOOK_ALIKES = {"k": "\u212a", "i": "\u0130"}  # the Kelvin sign lower-cases to k; I with a dot is no I
FIELD_VALUES = st.one_of(
    scalars,
    st.integers(-3, 3), st.integers(0, 70_000), st.sampled_from([96.0, 0.5, 1e3, -1.0, 2.0**53]),
    SOURCE_NAMES := st.sampled_from(["default", "kafka"]).flatmap(
        lambda name: st.tuples(*(st.sampled_from([c, c.upper(), *LOOK_ALIKES.get(c, "")]) for c in name)).map("".join)
    ),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", fullmatch=True),
    st.dictionaries(st.text(max_size=6), values, max_size=3),
    st.lists(values, max_size=3),
)  # fmt: skip
BODIES = st.dictionaries(st.sampled_from([*FIELD_NAMES, "not_a_field"]), FIELD_VALUES, max_size=5) | (
    st.fixed_dictionaries({}, optional={  # the fields that work together, each value likelier to matter
        "source": SOURCE_NAMES, "batch_input": st.dictionaries(st.text(max_size=6), values, max_size=3),
        "batch_max_items": st.none() | st.integers(0, 12), "batch_max_bytes": st.none() | st.integers(0, 70_000),
    })
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(BODIES, st.sampled_from(sorted(NAMED)))
def test_the_document_and_the_app_take_the_same_bodies(body, default_items):
    batch_input = body.get("batch_input")
    if isinstance(batch_input, dict):  # the three bounds JSON Schema cannot state, stated in its description
        assume(_depth(batch_input) <= BATCH_INPUT_MAX_DEPTH)
        assume(
            len(json.dumps(batch_input, ensure_ascii=False, separators=(",", ":")).encode()) <= BATCH_INPUT_MAX_BYTES
        )
        least = least_batch_bytes(Delivery(2, MAX_MESSAGE_BYTES, batch_input, True))  # nor what escaping adds
        assume(not isinstance(body.get("batch_max_bytes"), int) or body["batch_max_bytes"] >= least)
    try:
        parse_ingestion_request(json.dumps(body).encode(), NAMED[default_items])
        taken = True
    except RequestError:
        taken = False
    assert SCHEMAS[default_items].is_valid(body) == taken, (body, default_items)
