"""Text that leaves the app (a run's error in its status, problem details, logs) with secrets taken out:
the configured secret values (every source's header values), URL query strings and URL credentials."""

from __future__ import annotations

import re
from collections.abc import Iterable

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
