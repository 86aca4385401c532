"""The run (and chunk) the code is working for: a context variable that every log record made inside
`run_scope` reads, so each log line of a run carries `run_id` and `chunk_index` whatever its logger, and
that the Put Message retry loop counts its retries into (`count_retry`), for the chunk's metrics."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Scope:
    run_id: str
    chunk_index: int | None
    retries: list[int] = field(default_factory=lambda: [0])  # shared by the tasks the scope spawns


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("fanout_scope", default=None)


@contextmanager
def run_scope(run_id: str, chunk_index: int | None = None) -> Iterator[None]:
    token = _scope.set(_Scope(run_id, chunk_index))
    try:
        yield
    finally:
        _scope.reset(token)


def count_retry() -> None:
    scope = _scope.get()
    if scope is not None:
        scope.retries[0] += 1


def retries_in_scope() -> int:
    scope = _scope.get()
    return scope.retries[0] if scope is not None else 0


_plain_record = logging.getLogRecordFactory()


def scoped_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """A log record that carries the run id (and chunk index) of the scope it is made in, as attributes;
    none outside a scope (OpenTelemetry drops a None attribute with a warning). The record factory from
    import on; `core.redact` builds its redacting factory on this one."""
    record = _plain_record(*args, **kwargs)
    scope = _scope.get()
    if scope is not None:
        record.run_id = scope.run_id
        if scope.chunk_index is not None:
            record.chunk_index = scope.chunk_index
    return record


logging.setLogRecordFactory(scoped_record)
