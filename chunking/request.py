"""The body of `POST /api/ingestions`, validated field by field."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from core.contract import RUN_ID_RULE, is_run_id
from core.errors import RequestError, RequestTooLargeError
from core.settings import HTTP_MAX_BODY_BYTES, MAX_CHUNK_SIZE, RUN_MAX_CONCURRENCY, TOLERATED_FAILED_CHUNKS, Settings

_FIELDS = ("source", "chunk_size", "run_id", "max_concurrency", "max_failed_chunks")
_MAX_INT_DIGITS = 20


@dataclass(frozen=True)
class IngestionRequest:
    source: str
    chunk_size: int
    run_id: str
    max_concurrency: int = 0  # built by hand (tests, benchmarks): no cap, and no failed chunk tolerated
    max_failed_chunks: int = 0


def new_run_id() -> str:
    """Sortable by start time, unique by its random tail."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def parse_ingestion_request(body: bytes, settings: Settings) -> IngestionRequest:
    if len(body) > settings.http_max_body_bytes:
        raise RequestTooLargeError(
            f"the request body is {len(body)} bytes, over the {settings.http_max_body_bytes} this app accepts "
            f"({HTTP_MAX_BODY_BYTES.name})"
        )
    fields = _json_object(body)
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_FIELDS)}", field=unknown[0])
    return IngestionRequest(
        source=_source(fields.get("source"), settings),
        chunk_size=_chunk_size(fields.get("chunk_size"), settings.chunk_size),
        run_id=_run_id(fields.get("run_id")),
        max_concurrency=_count_field(
            fields, "max_concurrency", settings.run_max_concurrency, int(RUN_MAX_CONCURRENCY.high), " (no cap)"
        ),
        max_failed_chunks=_count_field(
            fields, "max_failed_chunks", settings.tolerated_failed_chunks, int(TOLERATED_FAILED_CHUNKS.high)
        ),
    )


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body, parse_int=_bounded_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError("body is nested too deeply to be a request") from None
    if not isinstance(value, dict):
        raise RequestError(f"body must be a JSON object, got {type(value).__name__}")
    return value


def _bounded_int(text: str) -> int:
    """No field takes a long number, and int() of thousands of digits is slow or refused (ValueError)."""
    digits = len(text.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        raise RequestError(f"body holds a number of {digits} digits; no field takes more than {_MAX_INT_DIGITS}")
    return int(text)


def _source(value: object, settings: Settings) -> str:
    if value is None:
        return settings.source(None).name
    if not isinstance(value, str):
        raise RequestError("source must be a string naming a configured source", field="source")
    if value.lower() not in settings.sources:
        names = ", ".join(sorted(settings.sources))
        raise RequestError(f"unknown source {value!r}; configured sources: {names}", field="source")
    return value.lower()


def _chunk_size(value: object, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"chunk_size must be an integer, got {json.dumps(value)}", field="chunk_size")
    if not 1 <= value <= MAX_CHUNK_SIZE:
        raise RequestError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}, got {value}", field="chunk_size")
    return value


def _run_id(value: object) -> str:
    if value is None:
        return new_run_id()
    if not is_run_id(value):
        raise RequestError(RUN_ID_RULE, field="run_id")
    return cast(str, value)


def _count_field(fields: dict[str, Any], name: str, default: int, high: int, zero: str = "") -> int:
    """A whole-number request field from 0 to `high`; `default` when absent."""
    value = fields.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise RequestError(f"{name} must be a whole number from 0{zero} to {high}, got {json.dumps(value)}", field=name)
    return value
