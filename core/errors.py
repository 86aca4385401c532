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


class ClaimLostError(FanoutError):
    """Another invocation claimed or updated this chunk first; this one must not send it."""


class QueueSendError(FanoutError):
    """Put Message failed for good: a status that retrying will not fix, or retries used up."""
