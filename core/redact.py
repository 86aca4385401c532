"""Text that leaves the app (a run's error in its status, problem details, logs) with secrets taken out:
the configured secret values (every source's header values), URL query strings and URL credentials."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from core.run_scope import scoped_record

REDACTED = "[redacted]"
_URL_QUERY = re.compile(r"(?P<url>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]*")
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"<>]*@")
_SHORTEST_SECRET = 4  # shorter values (say "1" or "yes") would redact ordinary words


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            for value in {secret, secret.strip()}:
                if len(value.strip()) >= _SHORTEST_SECRET:  # as written, and as repr() and escapes show it
                    forms |= {value, repr(value)[1:-1], value.encode("unicode_escape").decode()}
        self._secrets = sorted(forms, key=len, reverse=True)  # the longest first: nothing half-redacted

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _URL_QUERY.sub(rf"\g<url>?{REDACTED}", text)
        return _URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)


_SCOPED_RECORDS = scoped_record  # records carry their run's id, then are redacted (core/run_scope.py)
_CHATTY_LOGGERS = ("httpx", "httpcore")  # a line per request at INFO, the URL with its query string


def redact_logs(redact: Redactor) -> None:
    """From now on every log record's text and traceback pass through `redact` before any handler sees
    them (the Functions host's, Application Insights', a test's); httpx's per-request lines are silenced."""

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = _SCOPED_RECORDS(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken logging call: its format string is kept, its arguments (unredacted) dropped
            record.args = None
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None  # handlers that read the exception object itself would show it unredacted
        return record

    logging.setLogRecordFactory(redacted_record)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
