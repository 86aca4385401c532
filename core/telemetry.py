"""Telemetry: OpenTelemetry to Application Insights, run and chunk as dimensions, metrics per chunk.

- `configure_telemetry()` (at startup) sends logs, traces and metrics to Application Insights with the
  `azure-monitor-opentelemetry` distro when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set, with the
  app's managed identity when `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` names one; unset, it does nothing.
- Log records made inside a `core.run_scope.run_scope` carry `run_id` and `chunk_index` as attributes
  (Application Insights: `customDimensions`).
- `record_chunk(...)` adds one chunk's numbers to three instruments, once per chunk invocation and
  never per message (a metric update costs microseconds; a chunk holds thousands of messages).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from opentelemetry import metrics

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


def configure_telemetry(env: dict[str, str] | None = None) -> bool:
    """Sends telemetry to Application Insights if it is configured; says whether it does."""
    env = dict(os.environ) if env is None else env
    connection_string = APPLICATIONINSIGHTS_CONNECTION_STRING.read(env)
    if not connection_string:
        return False
    from azure.identity import ManagedIdentityCredential
    from azure.monitor.opentelemetry import configure_azure_monitor

    client_id = _identity_client_id(env.get(_AUTHENTICATION, ""))
    credential = ManagedIdentityCredential(client_id=client_id) if client_id else None
    configure_azure_monitor(connection_string=connection_string, credential=credential)
    return True


def _identity_client_id(authentication: str) -> str | None:
    """`ClientId=<id>;Authorization=AAD` (the Functions host's format) → the identity's client id."""
    parts = dict(part.split("=", 1) for part in authentication.split(";") if "=" in part)
    return parts.get("ClientId") if parts.get("Authorization") == "AAD" else None
