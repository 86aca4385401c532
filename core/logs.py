"""What the app's log records are: redacted (core/redact.py), carrying their run's id (core/run_scope.py),
and few. The Azure SDK's per-request lines (8-10 an invocation, each an Application Insights trace that
is paid for) and httpx's (a URL each, with its query string) are left out unless AZURE_SDK_LOG_LEVEL asks
for them; each trigger logs one INFO line of what it did (`did`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec

from core.redact import REASON_CHARS, Redactor, public_text, redact_logs

P = ParamSpec("P")
log = logging.getLogger(__name__)

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


class FunctionFailedError(Exception):
    """What leaves a trigger function whose handler failed: the failure's type and reason, redacted. The
    worker hands this text to the Functions host (its log, Application Insights' exceptions), past the app's
    log redactor; the failure itself, traceback and all, is logged through it first."""


def failures_redacted(handler: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """`handler`, failing with FunctionFailedError instead of what it raised (it fails all the same: the host retries
    the message or the blob event as before)."""

    @functools.wraps(handler)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await handler(*args, **kwargs)
        except Exception as exc:
            log.error("%s failed", handler.__name__, exc_info=True)
            raise FunctionFailedError(public_text(f"{type(exc).__name__}: {exc}", REASON_CHARS)) from None

    return run
