"""The HTTP half of the Functions host: a request mapped onto the app's HTTP functions as the host maps it.

`HttpRoutes.answer(method, url, headers, body)` is the one mapping from an HTTP request to a
`func.HttpRequest` and a call of the function whose route and method match: route parameters as strings,
percent-decoded; the query with empty values dropped (a repeated name's values joined by commas); headers
as sent; the body's bytes, read only once the route and the key are right. With a key, routes of auth level
FUNCTION or ADMIN answer `401` unless the request carries it as `?code=` or `x-functions-key`, as Azure
checks a function key. `fanout serve` and the API fuzzing both call it; nothing here knows a route of the
app by name.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func

ROUTE_PREFIX = "/api/"  # host.json's extensions.http.routePrefix, "api" unless set
_PARAMETER = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def bindings_of(function: Any) -> list[dict[str, Any]]:
    """An indexed function's bindings, as `function.json` would hold them."""
    return list(json.loads(function.get_function_json())["bindings"])


async def call_function(function: Callable[[Any], Any], argument: Any) -> Any:
    """Calls a user function as the worker does: an `async def` on the loop, any other in a thread."""
    if inspect.iscoroutinefunction(function):
        return await function(argument)
    return await asyncio.to_thread(function, argument)


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP-triggered function: its route template compiled, its methods and auth level."""

    name: str
    template: str
    methods: frozenset[str]
    auth_level: str
    function: Callable[[func.HttpRequest], Any]

    @property
    def pattern(self) -> re.Pattern[str]:
        """The template's literal segments in any case, as the host matches them; parameters as written."""
        return re.compile("".join(
            f"(?P<{part[1:-1].split(':')[0]}>[^/]+)" if _PARAMETER.fullmatch(part) else re.escape(part)
            for part in re.split(r"(\{[^}]*\})", self.template)
        ), re.IGNORECASE)  # fmt: skip

    @property
    def literal_segments(self) -> int:
        """Segments without a parameter: a route with more of them wins, as in ASP.NET routing."""
        return sum(1 for segment in self.template.split("/") if not _PARAMETER.search(segment))


class HttpRoutes:
    """Every HTTP route of an app, and the host's mapping of a request onto them."""

    def __init__(self, functions: Iterable[Any], key: str | None = None) -> None:
        """`functions`: what `app.get_functions()` returned; `key`: the function key to demand, or None."""
        self.key = key or None
        self.routes: list[HttpRoute] = []
        for function in functions:
            for binding in bindings_of(function):
                if binding["type"] == "httpTrigger":
                    self.routes.append(HttpRoute(
                        name=function.get_function_name(),
                        template=binding.get("route") or function.get_function_name(),
                        methods=frozenset(m.upper() for m in binding.get("methods") or ("GET", "POST")),
                        auth_level=str(binding.get("authLevel", "FUNCTION")).upper(),
                        function=function.get_user_function(),
                    ))  # fmt: skip
        self.routes.sort(key=lambda route: -route.literal_segments)

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        """The route a request's method and path name, with its route parameters; None when none does."""
        if not path.lower().startswith(ROUTE_PREFIX):
            return None
        rest = path[len(ROUTE_PREFIX) :].rstrip("/")
        for route in self.routes:
            found = route.pattern.fullmatch(rest)
            if found and method.upper() in route.methods:
                return route, {name: unquote(value) for name, value in found.groupdict().items()}
        return None

    async def answer(
        self, method: str, url: str, headers: Mapping[str, str], body: Callable[[], Awaitable[bytes]]
    ) -> func.HttpResponse:
        """The function's answer to the request, or the host's own: `404` for no route, `401` for no key, both
        before `body` is read (a request no function takes fills no memory)."""
        resolved = self._resolve(method, url, headers)
        if isinstance(resolved, func.HttpResponse):
            return resolved
        route, route_params = resolved
        params = _query(urlsplit(url).query)
        request = func.HttpRequest(
            method.upper(), url, headers=dict(headers), params=params, route_params=route_params, body=await body()
        )
        response = await call_function(route.function, request)
        if not isinstance(response, func.HttpResponse):
            return host_problem(500, f"{route.name} returned no HTTP response")
        return response

    def _resolve(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> func.HttpResponse | tuple[HttpRoute, dict[str, str]]:
        parts = urlsplit(url)
        matched = self.match(method, parts.path)
        if matched is None:
            return host_problem(404, f"no function answers {method.upper()} {parts.path[:200]}")
        if not self._authorized(matched[0], _query(parts.query), headers):
            return host_problem(401, f"{matched[0].name} needs the function key: ?code= or the x-functions-key header")
        return matched

    def _authorized(self, route: HttpRoute, params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        if self.key is None or route.auth_level == "ANONYMOUS":
            return True
        given = params.get("code") or {name.lower(): value for name, value in headers.items()}.get("x-functions-key")
        # a header's bytes that are no UTF-8 reach here as surrogates: they are a wrong key, not a failure
        return given is not None and secrets.compare_digest(given.encode("utf-8", "surrogateescape"), self.key.encode())


def host_problem(status: int, detail: str) -> func.HttpResponse:
    """An answer of the host's own (no route, no key): problem+json, no function was called."""
    body = {"type": "about:blank", "title": {401: "Unauthorized", 404: "Not Found"}.get(status, "Error"),
            "status": status, "detail": detail}  # fmt: skip
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/problem+json")


def _query(query: str) -> dict[str, str]:
    """The query as the host hands it over: empty values dropped, a repeated name's values joined by commas."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=False):
        params[name] = f"{params[name]},{value}" if name in params else value
    return params
