"""A run's completion event as a CloudEvents 1.0 structured JSON `POST` to RUN_EVENTS_WEBHOOK.

A delivery is up to RUN_EVENTS_WEBHOOK_ATTEMPTS `POST`s, each bounded by RUN_EVENTS_WEBHOOK_TIMEOUT
(answer included: a webhook that hangs, or answers after ten minutes, has failed), with backoff between
them. Its outcome is `delivered` (2xx), `undelivered` (a redirect, which is never followed, or a 4xx
other than 408 and 429: sending again will not help) or `pending` (timeouts, broken connections, 408,
429, 5xx): the sweeper delivers a pending event again, RUN_EVENTS_WEBHOOK_DELIVERIES times in all, then
records it `undelivered`. Nothing of the answer is read or kept but its status (a webhook that echoes
the request gets its token nowhere), and no reason names the URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from core.network import Network
from core.redact import public_text
from core.retry import backoff_delay, retry_after_seconds
from core.settings import WebhookConfig

CLOUDEVENTS_JSON = "application/cloudevents+json; charset=utf-8"
EVENT_TYPE_PREFIX = "ingestion.run."
_RETRIED = (408, 429)

DeliveryState = Literal["delivered", "undelivered", "pending"]


@dataclass(frozen=True)
class Delivery:
    state: DeliveryState
    reason: str  # ASCII, names no URL: it is kept in blob metadata and shown in the run's status


def cloud_event(event: dict[str, Any], source: str) -> dict[str, Any]:
    """The CloudEvent of a completion event (core/run_events.py): `id` is a digest of the run id and the
    time the run's end was marked, the same for every delivery of one run end (a receiver drops repeats) and
    another for the run's next end after a redrive; `subject` is the run id."""
    run_end = f"{event['run_id']}/{event['finished_at']}".encode()
    return {
        "specversion": "1.0",
        "type": EVENT_TYPE_PREFIX + event["state"],
        "source": source,
        "id": hashlib.sha256(run_end).hexdigest()[:32],
        "subject": event["run_id"],
        "time": event["finished_at"],
        "datacontenttype": "application/json",
        "data": event,
    }


async def deliver(config: WebhookConfig, event: dict[str, Any], network: Network) -> Delivery:
    """One delivery of `event` to the webhook, reached under `network` (the module's docstring says what each
    outcome means). Invariant: it ends within `config.delivery_seconds`, a token included; cut off there, it is
    `pending` (core/run_events.py's sweep relies on it never to start a second delivery beside a live one)."""
    try:
        async with asyncio.timeout(config.delivery_seconds):
            return await _deliver(config, event, network)
    except TimeoutError:
        return Delivery("pending", f"cut off after {config.delivery_seconds:g} s, the most a delivery may take")


async def _deliver(config: WebhookConfig, event: dict[str, Any], network: Network) -> Delivery:
    assert config.url is not None
    body = json.dumps(cloud_event(event, config.source)).encode()
    headers = {"Content-Type": CLOUDEVENTS_JSON}
    if config.audience:
        headers["Authorization"] = "Bearer " + await _token(config, network)
    async with httpx.AsyncClient(follow_redirects=False, **network.httpx_options(config.url)) as client:
        attempt = 0
        while True:
            attempt += 1
            outcome, retry_after = await _post(client, config, body, headers)
            if outcome.state != "pending" or attempt >= config.retry.attempts:
                return outcome
            await asyncio.sleep(backoff_delay(config.retry, attempt, retry_after))


async def _post(
    client: httpx.AsyncClient, config: WebhookConfig, body: bytes, headers: dict[str, str]
) -> tuple[Delivery, float | None]:
    assert config.url is not None
    try:
        async with asyncio.timeout(config.timeout):
            request = client.build_request("POST", config.url, content=body, headers=headers)
            response = await client.send(request, stream=True)  # the body is never read
            await response.aclose()
    except TimeoutError:
        return Delivery("pending", f"no answer within {config.timeout:g} s"), None
    except httpx.HTTPError as exc:
        said = f": {public_text(str(exc), 300)}" if str(exc) else ""  # redacted: the URL's query is a secret
        return Delivery("pending", f"the request failed: {type(exc).__name__}{said}"), None
    status = response.status_code
    if 200 <= status < 300:
        return Delivery("delivered", f"HTTP {status}"), None
    if 300 <= status < 400:
        return Delivery("undelivered", f"HTTP {status}: a redirect, which is not followed"), None
    if 400 <= status < 500 and status not in _RETRIED:
        return Delivery("undelivered", f"HTTP {status}: refused"), None
    return Delivery("pending", f"HTTP {status}"), retry_after_seconds(response.headers.get("Retry-After"))


async def _token(config: WebhookConfig, network: Network) -> str:
    """An Entra token for the audience, from the app's identity (the storage identity's client id)."""
    assert config.audience is not None
    async with network.credential(config.client_id) as credential:
        token = await credential.get_token(config.audience.rstrip("/") + "/.default")
    return token.token
