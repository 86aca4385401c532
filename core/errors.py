"""Every error this app raises on purpose, each saying what to do about it.

`fields` are facts worth returning with the message (an HTTP problem's extension members).
"""

from __future__ import annotations

from typing import Any


class FanoutError(Exception):
    """Base class: a failure the app reports instead of a stack trace."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields = {name: value for name, value in fields.items() if value is not None}

    @property
    def detail(self) -> str:
        return str(self)


class SettingsError(FanoutError):
    """An environment setting is missing or malformed."""


class RequestError(FanoutError):
    """A caller's request is invalid; the message says which field and why."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.field = field


class RequestTooLargeError(RequestError):
    """A caller's request body is over the size the app accepts."""


class RunNotFoundError(FanoutError):
    """No run has this id."""


class RunConflictError(FanoutError):
    """A run with this id already exists with different parameters."""


class SourceError(FanoutError):
    """The source API failed or answered something that is not a JSON array of items."""


class RunFailedError(FanoutError):
    """The run failed while the request waited for it (its source failed); `fields` describe the run."""


class ContractError(FanoutError):
    """A message or record is not in the shape the contract says (core/contract.py)."""


class ChunkError(FanoutError):
    """A chunk blob cannot be ingested as written; retrying will not help."""


class UpdateConflictError(FanoutError):
    """Another invocation wrote the blob (a run record, a chunk status, a completion mark, a sweep log) since
    this one read it: this one's write did not happen, and it must not act on what it read."""


class ClaimLostError(UpdateConflictError):
    """Another invocation holds the claim on this chunk or on this run's chunking: this one must not send
    the chunk, nor chunk the run."""


class QueueSendError(FanoutError):
    """Put Message failed for good: a status that retrying will not fix (`refused`: the queue is gone, the
    message refused, a certificate untrusted), or retries used up."""

    def __init__(self, reason: str, *, refused: bool = False) -> None:
        super().__init__(reason)
        self.refused = refused
