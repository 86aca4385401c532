"""Telemetry: OpenTelemetry to Application Insights, run and chunk as dimensions, metrics per chunk.

- `configure_telemetry()` (at startup) sends logs, traces and metrics to Application Insights with the
  `azure-monitor-opentelemetry` distro when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set, with the
  app's managed identity when `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` names one; unset, it does nothing.
  In Azure the Python worker has configured the distro already (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY),
  so a second configuration would do nothing: then it only adds the span redaction below to the worker's.
- No span carries a URL's query string: the distro's httpx instrumentation (a span per source request,
  its `url.full` holding the source's `api_key`) is off (`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=httpx`,
  an app setting the worker's configuration reads too), and `RedactingSpanProcessor` takes query strings
  and credentials out of every string attribute a span starts with, whichever library made it.
- Log records made inside a `core.run_scope.run_scope` carry `run_id` and `chunk_index` as attributes
  (Application Insights: `customDimensions`).
- `record_chunk(...)` adds one chunk's numbers to three instruments, once per chunk invocation and
  never per message (a metric update costs microseconds; a chunk holds thousands of messages).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.context import Context as SpanContext
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider

from core.redact import Redactor
from core.settings import APPLICATIONINSIGHTS_CONNECTION_STRING

METER_NAME = "azure_queue_fanout"
_AUTHENTICATION = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"


@dataclass(frozen=True)
class _Instruments:
    enqueued: metrics.Counter
    retries: metrics.Counter
    seconds: metrics.Histogram


_instruments: _Instruments | None = None


def _meter_instruments() -> _Instruments:
    """Made on first use, from whichever meter provider is set by then (a no-op one when telemetry is off)."""
    global _instruments
    if _instruments is None:
        meter = metrics.get_meter(METER_NAME)
        _instruments = _Instruments(
            enqueued=meter.create_counter("chunk.messages_enqueued", unit="{message}",
                                          description="messages a chunk invocation enqueued"),
            retries=meter.create_counter("chunk.storage_retries", unit="{retry}",
                                         description="Put Message retries in a chunk invocation"),
            seconds=meter.create_histogram("chunk.seconds", unit="s",
                                           description="how long a chunk invocation took"),
        )  # fmt: skip
    return _instruments


def record_chunk(*, run_id: str, state: str, enqueued: int, retries: int, seconds: float) -> None:
    attributes = {"run_id": run_id, "state": state}
    instruments = _meter_instruments()
    instruments.enqueued.add(enqueued, attributes)
    instruments.retries.add(retries, attributes)
    instruments.seconds.record(seconds, attributes)


class RedactingSpanProcessor(SpanProcessor):
    """Redacts URL query strings and credentials in the string attributes a span starts with (an HTTP
    client span's `url.full`/`http.url`), before any exporter sees them."""

    def __init__(self) -> None:
        self._redact = Redactor([])  # URL query strings and credentials: no configured secret needed

    def on_start(self, span: Span, parent_context: SpanContext | None = None) -> None:
        for key, value in dict(span.attributes or {}).items():
            if isinstance(value, str) and "://" in value:
                redacted = self._redact(value)
                if redacted != value:
                    span.set_attribute(key, redacted)


def configure_telemetry(env: dict[str, str] | None = None) -> bool:
    """Sends telemetry to Application Insights if it is configured; says whether it does."""
    env = dict(os.environ) if env is None else env
    connection_string = APPLICATIONINSIGHTS_CONNECTION_STRING.read(env)
    if not connection_string:
        return False
    configured = trace.get_tracer_provider()
    if isinstance(configured, TracerProvider):  # the Python worker configured the distro already
        configured.add_span_processor(RedactingSpanProcessor())
        return True
    from azure.identity import ManagedIdentityCredential
    from azure.monitor.opentelemetry import configure_azure_monitor

    client_id = _identity_client_id(env.get(_AUTHENTICATION, ""))
    credential = ManagedIdentityCredential(client_id=client_id) if client_id else None
    configure_azure_monitor(
        connection_string=connection_string, credential=credential, span_processors=[RedactingSpanProcessor()],
        instrumentation_options={"httpx": {"enabled": False}},
    )  # fmt: skip
    return True


def _identity_client_id(authentication: str) -> str | None:
    """`ClientId=<id>;Authorization=AAD` (the Functions host's format) → the identity's client id."""
    parts = dict(part.split("=", 1) for part in authentication.split(";") if "=" in part)
    return parts.get("ClientId") if parts.get("Authorization") == "AAD" else None
