"""The body of `POST /api/ingestions`, validated field by field against one table (`FIELDS`).

Each field declares its JSON Schema (type and bounds), its default and its meaning once: the validator
reads the bounds from there, and so does the OpenAPI document (api/openapi.py), so the two cannot part.
"""

from __future__ import annotations

import json
import math
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from core.contract import RUN_ID_JSON_PATTERN, RUN_ID_RULE, is_run_id
from core.delivery import BATCH_INPUT_MAX_BYTES, MAX_MESSAGE_BYTES, Delivery, least_batch_bytes
from core.errors import RequestError, RequestTooLargeError
from core.settings import (
    HTTP_MAX_BODY_BYTES,
    MAX_CHUNK_SIZE,
    MESSAGE_BATCH_MAX_ITEMS,
    QUEUE_MAX_BACKLOG,
    RUN_MAX_CONCURRENCY,
    TOLERATED_FAILED_CHUNKS,
    Settings,
)

_MAX_INT_DIGITS = sys.int_info.default_max_str_digits  # past it int() refuses; a batch_input may hold any less
BATCH_INPUT_MAX_DEPTH = 32
# The least batch_max_bytes: room for one item in a batch with an envelope and the longest run id; with a
# batch_input, of the largest one (what the OpenAPI document can state without knowing the run).
LEAST_BATCH_BYTES = least_batch_bytes(Delivery(batch_max_items=2, envelope=True))
LEAST_BATCH_BYTES_WITH_INPUT = least_batch_bytes(
    Delivery(batch_max_items=2, envelope=True, batch_input={"": "x" * (BATCH_INPUT_MAX_BYTES - 7)})
)


@dataclass(frozen=True)
class IngestionRequest:
    """A start request, every field given or defaulted (built by hand in tests and benchmarks: no cap, no
    failed chunk tolerated, one item a message)."""

    source: str
    chunk_size: int
    run_id: str
    max_concurrency: int = 0
    max_failed_chunks: int = 0
    max_failed_percent: int = 0
    batch_max_items: int = 1
    batch_max_bytes: int = MAX_MESSAGE_BYTES
    batch_input: dict[str, Any] | None = None
    envelope: bool = False
    max_backlog: int = 0

    @property
    def delivery(self) -> Delivery:
        return Delivery(self.batch_max_items, self.batch_max_bytes, self.batch_input, self.envelope)


@dataclass(frozen=True)
class RequestField:
    """One optional field of the body: `schema` (JSON Schema) states its type and bounds, `default` what its
    absence means under the app's settings, `parse` checks a given value against `schema` and returns it,
    `choices` the values the app's settings allow (a configured source's name)."""

    name: str
    meaning: str
    schema: Mapping[str, Any]
    default: Callable[[Settings], Any]
    parse: Callable[[RequestField, object, Settings], Any]
    choices: Callable[[Settings], list[str]] | None = None

    def described(self, settings: Settings) -> dict[str, Any]:
        """The field's JSON Schema with its meaning and its choices under `settings`, as `read` takes them: a
        choice in any case, and null, which stands for the default."""
        schema = {**self.schema, "type": [self.schema["type"], "null"], "description": self.meaning}
        if self.choices:
            names = self.choices(settings)
            schema |= {"pattern": "^(?:" + "|".join(map(_in_any_case, names)) + ")$", "examples": names}
        return schema

    def read(self, given: Mapping[str, Any], settings: Settings) -> Any:
        """The field's value in the body `given`: its default when absent or null, else checked."""
        value = given.get(self.name)
        return self.default(settings) if value is None else self.parse(self, value, settings)


def _in_any_case(name: str) -> str:
    """A pattern matching `name` in any case (a source's name: letters, digits and `_`, nothing to escape)."""
    return "".join(f"[{char.lower()}{char.upper()}]" if char.isalpha() else char for char in name)


def _integer(field: RequestField, value: object, settings: Settings) -> int:
    """A whole number within the schema's `minimum` and `maximum`; `96.0` is one, as JSON Schema counts it."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{field.name} must be an integer, got {json.dumps(value)}", field=field.name)
    low, high = field.schema["minimum"], field.schema["maximum"]
    if not low <= value <= high:
        raise RequestError(f"{field.name} must be between {low} and {high}, got {value}", field=field.name)
    return value


def _source(field: RequestField, value: object, settings: Settings) -> str:
    if not isinstance(value, str):
        raise RequestError("source must be a string naming a configured source", field="source")
    if not value.isascii() or value.lower() not in settings.sources:  # ASCII in any case (K, not the Kelvin sign)
        names = ", ".join(sorted(settings.sources))
        raise RequestError(f"unknown source {value!r}; configured sources: {names}", field="source")
    return value.lower()


def _boolean(field: RequestField, value: object, settings: Settings) -> bool:
    if not isinstance(value, bool):
        raise RequestError(f"{field.name} must be true or false, got {json.dumps(value)[:40]}", field=field.name)
    return value


def _batch_input(field: RequestField, value: object, settings: Settings) -> dict[str, Any]:
    """A JSON object every batch carries as it is: so one that any consumer's parser reads (Unicode text, at
    most BATCH_INPUT_MAX_DEPTH deep; non-finite numbers never reach here: the body refuses them)."""
    if not isinstance(value, dict):
        raise RequestError(f"batch_input must be a JSON object, got {type(value).__name__}", field=field.name)
    if _depth(value) > BATCH_INPUT_MAX_DEPTH:
        raise RequestError(f"batch_input is nested deeper than {BATCH_INPUT_MAX_DEPTH} levels", field=field.name)
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            "batch_input holds a lone surrogate (\\ud800-\\udfff): not Unicode text", field=field.name
        ) from None
    size = len(text)
    if size > BATCH_INPUT_MAX_BYTES:
        raise RequestError(f"batch_input is {size} bytes as JSON, over {BATCH_INPUT_MAX_BYTES}", field=field.name)
    return value


def _depth(value: object) -> int:
    """How deep arrays and objects nest in `value` (a scalar: 0), without recursion."""
    deepest, level = 0, [(value, 1)]
    while level:
        node, depth = level.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            level.extend((child, depth + 1) for child in children)
    return deepest


def _run_id(field: RequestField, value: object, settings: Settings) -> str:
    if not is_run_id(value):
        raise RequestError(RUN_ID_RULE, field="run_id")
    return cast(str, value)


FIELDS: tuple[RequestField, ...] = (
    RequestField(
        "source", "the name of a configured source (default: the one at `SOURCE_URL`); never a URL",
        {"type": "string", "minLength": 1}, lambda settings: settings.source(None).name, _source,
        lambda settings: sorted(settings.sources),
    ),
    RequestField(
        "chunk_size", "IDs per chunk blob (default `CHUNK_SIZE`; in batches `CHUNK_SIZE` x `batch_max_items`, at "
        f"most {MAX_CHUNK_SIZE}: about `CHUNK_SIZE` messages' worth)",
        {"type": "integer", "minimum": 1, "maximum": MAX_CHUNK_SIZE}, lambda settings: settings.chunk_size, _integer,
    ),
    RequestField(
        "run_id", "your id for the run: a repeated request with it returns the same run. " + RUN_ID_RULE,
        {"type": "string", "pattern": RUN_ID_JSON_PATTERN}, lambda settings: new_run_id(), _run_id,
    ),
    RequestField(
        "max_concurrency",
        "chunk invocations ingesting this run at once; 0 = no cap (default `RUN_MAX_CONCURRENCY`)",
        {"type": "integer", "minimum": 0, "maximum": int(RUN_MAX_CONCURRENCY.high)},
        lambda settings: settings.run_max_concurrency, _integer,
    ),
    RequestField(
        "max_failed_chunks", "failed chunks the run tolerates (default `TOLERATED_FAILED_CHUNKS`)",
        {"type": "integer", "minimum": 0, "maximum": int(TOLERATED_FAILED_CHUNKS.high)},
        lambda settings: settings.tolerated_failed_chunks, _integer,
    ),
    RequestField(
        "max_failed_percent", "failed chunks the run tolerates in percent of its chunks, whichever of this and "
        "`max_failed_chunks` is passed first failing the run; 0 = no such threshold (default "
        "`TOLERATED_FAILED_PERCENT`)",
        {"type": "integer", "minimum": 0, "maximum": 100}, lambda settings: settings.tolerated_failed_percent,
        _integer,
    ),
    RequestField(
        "batch_max_items", "items a queue message carries; 1 = one ID a message, as the plain shape; above 1 each "
        "message is `{\"items\": [...]}` (default `MESSAGE_BATCH_MAX_ITEMS`)",
        {"type": "integer", "minimum": 1, "maximum": int(MESSAGE_BATCH_MAX_ITEMS.high)},
        lambda settings: settings.batch_max_items, _integer,
    ),
    RequestField(
        "batch_max_bytes", "a batch closes before the item that would take it past this many bytes as the queue "
        "stores it (base64 or XML-escaped, the larger); an item bigger on its own goes alone, up to the queue's "
        f"64 KiB; default and most: 64 KiB; with a `batch_input`, at least {LEAST_BATCH_BYTES_WITH_INPUT}, and "
        "at least what a message of it and one ID takes as stored (XML escapes `&`, `<`, `>` up to five times: "
        "JSON Schema cannot state it, a 400 names the least)",
        {"type": "integer", "minimum": LEAST_BATCH_BYTES, "maximum": MAX_MESSAGE_BYTES},
        lambda settings: MAX_MESSAGE_BYTES, _integer,
    ),
    RequestField(
        "batch_input", f"a JSON object every batch message carries: at most {BATCH_INPUT_MAX_BYTES} bytes as "
        f"compact JSON, nested at most {BATCH_INPUT_MAX_DEPTH} deep, its strings Unicode text (no lone surrogate); "
        "JSON Schema cannot state these three, a 400 names the one broken",
        {"type": "object"}, lambda settings: None, _batch_input,
    ),
    RequestField(
        "envelope", "each message is an object carrying `run_id` and `seq`, the item's 0-based place in the "
        "source's order: a consumer's key to drop duplicates by (default `MESSAGE_ENVELOPE`)",
        {"type": "boolean"}, lambda settings: settings.message_envelope, _boolean,
    ),
    RequestField(
        "max_backlog", "a target queue's approximate messages above which the run's chunks wait at their next "
        "checkpoint; 0 = off (default `QUEUE_MAX_BACKLOG`)",
        {"type": "integer", "minimum": 0, "maximum": int(QUEUE_MAX_BACKLOG.high)},
        lambda settings: settings.max_backlog, _integer,
    ),
)  # fmt: skip
FIELD_NAMES = tuple(field.name for field in FIELDS)


def new_run_id() -> str:
    """Sortable by start time, unique by its random tail."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def parse_ingestion_request(body: bytes, settings: Settings) -> IngestionRequest:
    if len(body) > settings.http_max_body_bytes:
        raise RequestTooLargeError(
            f"the request body is {len(body)} bytes, over the {settings.http_max_body_bytes} this app accepts "
            f"({HTTP_MAX_BODY_BYTES.name})"
        )
    given = _json_object(body)
    unknown = sorted(set(given) - set(FIELD_NAMES))
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(FIELD_NAMES)}", field=unknown[0]
        )
    request = IngestionRequest(**{field.name: field.read(given, settings) for field in FIELDS})
    if given.get("chunk_size") is None:
        request = replace(request, chunk_size=default_chunk_size(settings.chunk_size, request.batch_max_items))
    _check_delivery(request)
    return request


def default_chunk_size(chunk_size: int, batch_max_items: int) -> int:
    """IDs a chunk holds when the request does not say: `CHUNK_SIZE`, and in batches about that many messages'
    worth (`CHUNK_SIZE` x `batch_max_items` IDs, at most MAX_CHUNK_SIZE), so that a chunk's bookkeeping (about
    13 storage requests) is spread over hundreds of messages, not 50."""
    return min(MAX_CHUNK_SIZE, chunk_size * batch_max_items) if batch_max_items > 1 else chunk_size


def _check_delivery(request: IngestionRequest) -> None:
    """What the message shape's fields mean together (each was checked alone already); `body_rules`
    states the same in JSON Schema."""
    if request.batch_input is None:
        return
    if request.batch_max_items == 1:
        raise RequestError("batch_input is carried by batches: set batch_max_items above 1", field="batch_input")
    least = max(LEAST_BATCH_BYTES_WITH_INPUT, least_batch_bytes(request.delivery))
    if request.batch_max_bytes < least:  # past the static bound: a batch_input whose escaping grows it
        raise RequestError(
            f"batch_max_bytes must be at least {least} with this batch_input (what a message carrying it and "
            f"one ID takes as the queue stores it), got {request.batch_max_bytes}",
            field="batch_max_bytes",
        )


def body_rules(settings: Settings) -> dict[str, Any]:
    """`_check_delivery` in JSON Schema, under `settings`' defaults: with a `batch_input` (null is none)."""
    single = settings.batch_max_items == 1
    return {
        "if": {"properties": {"batch_input": {"type": "object"}}, "required": ["batch_input"]},
        "then": {  # null is the default: refused where the default batches nothing, else taken
            "properties": {"batch_max_items": {"minimum": 2, **({"type": "integer"} if single else {})},
                           "batch_max_bytes": {"minimum": LEAST_BATCH_BYTES_WITH_INPUT}},
            **({"required": ["batch_max_items"]} if single else {}),
        },
    }  # fmt: skip


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body, parse_int=_bounded_int, parse_float=_finite, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError("body is nested too deeply to be a request") from None
    if not isinstance(value, dict):
        raise RequestError(f"body must be a JSON object, got {type(value).__name__}")
    return value


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise RequestError(f"body holds the number {text[:40]}, too large for a float; JSON has no infinity")
    return number


def _no_constant(text: str) -> float:
    raise RequestError(f"body holds {text}, which is not JSON (no consumer's parser reads it)")


def _bounded_int(text: str) -> int:
    """Any integer int() reads (a batch_input carries it as written); a longer one is a clear 400, not a 500."""
    digits = len(text.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        raise RequestError(f"body holds a number of {digits} digits; JSON here takes at most {_MAX_INT_DIGITS}")
    return int(text)
