"""Every error this app raises on purpose, each saying what to do about it."""


class FanoutError(Exception):
    """Base class: a failure the app reports instead of a stack trace."""


class SettingsError(FanoutError):
    """An environment setting is missing or malformed."""


class RequestError(FanoutError):
    """A caller's request is invalid; the message says which field and why."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class RunConflictError(FanoutError):
    """A run with this id already exists with different parameters."""


class SourceError(FanoutError):
    """The source API failed or answered something that is not a JSON array of items."""


class ChunkError(FanoutError):
    """A chunk blob cannot be ingested as written; retrying will not help."""


class ClaimLostError(FanoutError):
    """Another invocation claimed or updated this chunk first; this one must not send it."""


class QueueSendError(FanoutError):
    """Put Message failed for good: a status that retrying will not fix, or retries used up."""
