"""The OpenAPI document at `GET /api/openapi.json`: valid OpenAPI 3.1, and equal to the app it describes:
every HTTP function of function_app.py with its route, method and auth level, every body field with the
bounds the validator enforces."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import azure.functions as func
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate

from api.openapi import openapi_document
from chunking.request import FIELD_NAMES, parse_ingestion_request
from core.errors import RequestError
from core.settings import Settings
from testkit.indexed_functions import indexed_functions

SETTINGS = Settings.from_env({})
DOCUMENT = openapi_document(SETTINGS)
BODY = DOCUMENT["paths"]["/api/ingestions"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _operations(document: dict) -> dict[str, tuple[str, str, bool]]:
    return {
        op["operationId"]: (path, method.upper(), bool(op["security"]))
        for path, item in document["paths"].items()
        for method, op in item.items()
    }


def test_the_document_is_valid_openapi_3_1():
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


def test_every_http_function_of_the_app_is_in_the_document_as_it_is_wired():
    wired = {
        name: ("/api/" + trigger["route"], method, trigger["authLevel"] != "ANONYMOUS")
        for name, bindings in indexed_functions().items()
        for trigger in bindings
        if trigger["type"] == "httpTrigger"
        for method in trigger["methods"]
    }
    assert wired == _operations(DOCUMENT)
    assert wired["openapi"] == ("/api/openapi.json", "GET", False)


def test_the_route_serves_the_document_with_the_app_origin(on_loop, functions):
    request = func.HttpRequest("GET", "https://fanout.example/api/openapi.json", body=b"")
    response = on_loop(functions["openapi"](request))

    assert response.status_code == 200 and response.mimetype == "application/json"
    served = json.loads(response.get_body())
    assert served["servers"] == [{"url": "https://fanout.example"}]
    assert served["paths"] == json.loads(json.dumps(openapi_document(Settings.from_env())["paths"]))


@pytest.mark.parametrize(
    ("url", "origin"),
    [("http://127.0.0.1:7071/API/openapi.json?code=the-key", "http://127.0.0.1:7071"),
     ("https://fanout.example/Api/OpenAPI.json?code=k&x=/api/", "https://fanout.example"),
     ("https://gw.example/fanout/api/openapi.json#code=k", "https://gw.example/fanout")],
)  # fmt: skip
def test_the_documents_server_is_the_apps_origin_in_any_case_never_its_query(on_loop, functions, url, origin):
    served = json.loads(on_loop(functions["openapi"](func.HttpRequest("GET", url, body=b""))).get_body())
    assert served["servers"] == [{"url": origin}]


def test_the_body_fields_are_those_the_app_accepts():
    assert tuple(BODY["properties"]) == FIELD_NAMES
    assert BODY["additionalProperties"] is False
    with pytest.raises(RequestError, match="unknown field"):
        parse_ingestion_request(b'{"not_a_field": 1}', SETTINGS)


INTEGER_FIELDS = [name for name, spec in BODY["properties"].items() if "integer" in spec["type"]]


@pytest.mark.parametrize("name", INTEGER_FIELDS)
@given(offset=st.integers(-3, 3), anywhere=st.integers(-(10**13), 10**13), at_low=st.booleans())
def test_an_integer_field_is_accepted_exactly_within_its_documented_bounds(name, offset, anywhere, at_low):
    spec = BODY["properties"][name]
    low, high = spec["minimum"], spec["maximum"]
    for value in ((low if at_low else high) + offset, anywhere):
        body = json.dumps({name: value}).encode()
        if low <= value <= high:
            assert getattr(parse_ingestion_request(body, SETTINGS), name) == value
        else:
            with pytest.raises(RequestError, match=f"between {low} and {high}"):
                parse_ingestion_request(body, SETTINGS)


@given(st.text(max_size=70))
def test_run_id_is_accepted_exactly_when_it_matches_the_documented_pattern(run_id):
    pattern = BODY["properties"]["run_id"]["pattern"]
    matches = re.search(pattern.removesuffix("$") + r"\Z", run_id) is not None  # ECMA `$`: the very end
    try:
        parse_ingestion_request(json.dumps({"run_id": run_id}).encode(), SETTINGS)
        accepted = True
    except RequestError:
        accepted = False
    assert accepted == matches


def test_source_lists_the_configured_sources():
    settings = Settings.from_env({"SOURCE_CRM__URL": "http://127.0.0.1:1/ids"})
    body = openapi_document(settings)["paths"]["/api/ingestions"]["post"]["requestBody"]
    source = body["content"]["application/json"]["schema"]["properties"]["source"]
    assert source["examples"] == ["crm", "default"]
    for name in ("crm", "CRM", "Default", "dEfAuLt", "crmx", "cr", "other"):  # the app takes a name in any case
        schema_says = re.search(source["pattern"], name) is not None
        try:
            parse_ingestion_request(json.dumps({"source": name}).encode(), settings)
            app_says = True
        except RequestError:
            app_says = False
        assert schema_says == app_says == (name.lower() in ("crm", "default")), name


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_null_is_a_fields_default_to_the_document_and_to_the_app(name):
    body = {name: None}
    assert jsonschema.Draft202012Validator(BODY).is_valid(body)
    taken, absent = (parse_ingestion_request(raw, SETTINGS) for raw in (json.dumps(body).encode(), b"{}"))
    assert replace(taken, run_id="new") == replace(absent, run_id="new")  # a new run id each time


@pytest.mark.parametrize("name", INTEGER_FIELDS)
def test_an_integer_field_takes_a_whole_number_written_with_a_fraction_as_json_schema_does(name):
    """Found by Schemathesis: JSON Schema's `integer` includes 96.0, which the app refused."""
    low = BODY["properties"][name]["minimum"]
    assert getattr(parse_ingestion_request(json.dumps({name: low + 1.0}).encode(), SETTINGS), name) == low + 1
    with pytest.raises(RequestError, match="must be an integer"):
        parse_ingestion_request(json.dumps({name: low + 0.5}).encode(), SETTINGS)
