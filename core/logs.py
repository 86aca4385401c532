"""What the app's log records are: redacted (core/redact.py), carrying their run's id (core/run_scope.py),
and few. The Azure SDK's per-request lines (8-10 an invocation, each an Application Insights trace that
is paid for) and httpx's (a URL each, with its query string) are left out unless AZURE_SDK_LOG_LEVEL asks
for them; each trigger logs one INFO line of what it did (`did`).
"""

from __future__ import annotations

import logging

from core.redact import Redactor, redact_logs

SDK_LOGGERS = ("azure", "httpx", "httpcore")


def configure_logs(redactor: Redactor, sdk_level: str) -> None:
    """From now on: every record redacted with `redactor`'s secrets (and those installed before), the SDKs'
    loggers at `sdk_level`."""
    redact_logs(redactor)
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(sdk_level)


def did(log: logging.Logger, what: str, *args: object, seconds: float) -> None:
    """A trigger's one INFO line: what it did, and how long it took."""
    log.info(what + " in %.2f s", *args, seconds)
