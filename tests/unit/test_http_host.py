"""`fanout serve`'s request mapping: a request reaches the function its route and method name, shaped as the
host hands it over, and a configured key is asked for as Azure asks for a function key."""

from __future__ import annotations

import asyncio
import json

import azure.functions as func
from hypothesis import given
from hypothesis import strategies as st

from fanout.http_host import HttpRoutes


def _app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.function_name("echo")
    @app.route(route="things/{thing_id}", methods=["GET"])
    async def echo(req: func.HttpRequest) -> func.HttpResponse:
        seen = {"route": dict(req.route_params), "params": dict(req.params), "body": req.get_body().decode(),
                "header": req.headers.get("x-probe")}  # fmt: skip
        return func.HttpResponse(json.dumps(seen), mimetype="application/json")

    @app.function_name("stop")
    @app.route(route="things/{thing_id}/stop", methods=["POST"])
    def stop(req: func.HttpRequest) -> func.HttpResponse:  # a plain def runs too, in a thread
        return func.HttpResponse(f"stopped {req.route_params['thing_id']}", status_code=202)

    @app.function_name("open")
    @app.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def open_route(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("open")

    return app


ROUTES = HttpRoutes(_app().get_functions(), key="the-key")


def _answer(method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"") -> func.HttpResponse:
    async def read() -> bytes:
        return body

    return asyncio.run(ROUTES.answer(method, url, headers or {}, read))


def test_request_reaches_its_function_as_the_host_hands_it_over() -> None:
    answer = _answer("GET", "http://h/api/things/a%20b?code=the-key&empty=&x=1&x=2", {"X-Probe": "yes"}, b"hi")
    assert answer.status_code == 200
    assert json.loads(answer.get_body()) == {
        "route": {"thing_id": "a b"}, "params": {"code": "the-key", "x": "1,2"}, "body": "hi", "header": "yes",
    }  # fmt: skip


def test_the_longer_route_and_the_method_pick_the_function() -> None:
    answer = _answer("POST", "http://h/api/things/7/stop", {"x-functions-key": "the-key"})
    assert (answer.status_code, answer.get_body()) == (202, b"stopped 7")
    assert _answer("DELETE", "http://h/api/things/7?code=the-key").status_code == 404
    assert _answer("GET", "http://h/elsewhere/things/7?code=the-key").status_code == 404


def test_a_function_route_answers_401_without_the_key_and_an_anonymous_one_does_not_ask() -> None:
    for headers, url in [
        ({}, "http://h/api/things/1"),
        ({"x-functions-key": "wrong"}, "http://h/api/things/1?code=no"),
    ]:
        answer = _answer("GET", url, headers)
        assert answer.status_code == 401
        assert answer.mimetype == "application/problem+json"
        assert "x-functions-key" in json.loads(answer.get_body())["detail"]
    assert _answer("GET", "http://h/api/open").get_body() == b"open"


@given(st.binary(max_size=40))
def test_any_key_header_bytes_get_a_401_or_the_function_never_a_failure(raw: bytes) -> None:
    given_key = raw.decode("utf-8", "surrogateescape")  # how a server hands over bytes that are no UTF-8
    answer = _answer("POST", "http://h/api/things/7/stop", {"x-functions-key": given_key})
    assert answer.status_code == (202 if raw == b"the-key" else 401)
    assert _answer("GET", "http://h/api/things/7", {"x-functions-key": given_key + "\udcff"}).status_code == 401


@given(st.sampled_from(["api/things", "API/Things", "Api/THINGS", "aPi/tHiNgS"]))
def test_a_routes_literal_segments_match_in_any_case_its_parameters_keep_theirs(prefix: str) -> None:
    answer = _answer("GET", f"http://h/{prefix}/MiXeD?code=the-key")
    assert answer.status_code == 200 and json.loads(answer.get_body())["route"] == {"thing_id": "MiXeD"}
    assert _answer("POST", f"http://h/{prefix}/7/STOP?code=the-key").status_code == 202
