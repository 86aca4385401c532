"""Every storage answer classified, as docs/reliability.md#storage-answers says: what a gateway or the
service answers Put Message with is retried, slows the pace, renews the signature or fails the send,
and a failure names the ids Azure support asks for. A loopback gateway answers from a script."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from email.message import Message
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AccessToken
from azure.storage.queue.aio import QueueClient
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import QueueSendError
from core.redact import public_reason
from core.retry import RetryPolicy
from core.settings import SAS_LIFETIME
from putmessage.connection_pool import ConnectionPool
from putmessage.pace import SendPace
from putmessage.sender import PACED_RETRIES, PutMessageSender
from testkit.loopback_api import Answer, LoopbackApi

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UFeWq2XlvKvhmQ5RzYCEQfWABSXzkYMfSmA=="
FAILURE = b"<?xml version='1.0'?><Error><Code>%b</Code><Message>%b</Message></Error>"


class Gateway:
    """Answers each Put Message with the next status of `script` (then 201), keeping what it was asked."""

    def __init__(self, script: list[int], code: bytes = b"ServerBusy") -> None:
        self.requests: list[tuple[str, Message]] = []
        self._script = list(script)
        self._code = code
        self._api = LoopbackApi(self._answer)
        self.url = self._api.url.removesuffix("/ids")

    def _answer(self, path: str, headers: Message) -> Answer:
        self.requests.append((path, headers))
        status = self._script.pop(0) if self._script else 201
        if status == 201:
            return 201, {"x-ms-request-id": f"stored-{len(self.requests)}"}, b""
        body = FAILURE % (self._code, b"The service failed.\nRequestId:abc\nTime:2026-12-02T00:00:00Z")
        return status, {"x-ms-request-id": f"req-{len(self.requests)}", "Content-Type": "application/xml"}, body

    def stop(self) -> None:
        self._api.stop()


def send(gateway: Gateway, texts: list[str], *, attempts: int = 4, pace: SendPace | None = None, pause: float = 0.0,
         **options):  # fmt: skip
    options = {"sas_lifetime": SAS_LIFETIME.default, **options}

    async def run() -> SendPace:
        connection = f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={KEY};QueueEndpoint={gateway.url}/acct"
        queue = QueueClient.from_connection_string(connection, "q")
        used = pace or SendPace(8)
        sender = PutMessageSender(
            ConnectionPool(queue.url, 4, None, 5.0), queue, encoding="none", ttl=None,
            retry=RetryPolicy(attempts=attempts, base_delay=0.0, max_delay=0.0), pace=used, on_retry=lambda: None,
            **options,
        )  # fmt: skip
        try:
            for text in texts:
                await sender.send(text)
                await asyncio.sleep(pause)
        finally:
            await queue.close()
        return used

    return asyncio.run(run())


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_a_gateway_or_service_answer_worth_retrying_is_retried_until_stored(status):
    gateway = Gateway([status, status])
    try:
        send(gateway, ["id-1"])
    finally:
        gateway.stop()
    assert len(gateway.requests) == 3


@pytest.mark.parametrize(("status", "slows"), [(500, True), (503, True), (502, False)])
def test_azure_throttling_with_500_or_503_slows_the_pace(status, slows):
    gateway = Gateway([status])
    pace = SendPace(8)
    try:
        send(gateway, ["id-1"], pace=pace)
    finally:
        gateway.stop()
    assert (pace.allowed < 8) == slows


def test_a_403_renews_the_signature_once_then_fails_naming_both_request_ids():
    gateway = Gateway([201, 403, 403, 403], code=b"AuthenticationFailed")  # the SAS was fine, then is refused
    try:
        with pytest.raises(QueueSendError) as raised:
            send(gateway, ["id-0", "id-1"], pause=1.1)
    finally:
        gateway.stop()
    assert len(gateway.requests) == 3  # id-0; id-1, and id-1 once more with a SAS signed afresh
    _, refused, again = (parse_qs(urlsplit(path).query) for path, _ in gateway.requests)
    assert refused["se"] < again["se"] and refused["sig"] != again["sig"] and again["sp"] == ["a"]  # add-only
    client_ids = {headers["x-ms-client-request-id"] for _, headers in gateway.requests[1:]}
    assert len(client_ids) == 1  # one message, one client request id on every attempt
    reason = str(raised.value)
    assert "answered 403 AuthenticationFailed: The service failed. RequestId:abc Time:2026-12-02T00:00:00Z" in reason
    assert f"x-ms-request-id req-3, x-ms-client-request-id {client_ids.pop()}" in reason


def test_a_403_then_stored_sends_the_message_once():
    gateway = Gateway([403], code=b"AuthenticationFailed")
    try:
        send(gateway, ["id-1"])
    finally:
        gateway.stop()
    assert len(gateway.requests) == 2


def test_each_message_has_its_own_client_request_id_and_the_user_agent_carries_the_suffix():
    gateway = Gateway([])
    try:
        send(gateway, [f"id-{n}" for n in range(5)], user_agent="contoso-ingest/2")
    finally:
        gateway.stop()
    ids = [headers["x-ms-client-request-id"] for _, headers in gateway.requests]
    assert len(set(ids)) == 5 and all(re.fullmatch(r"[0-9a-f]{16}-\d+", value) for value in ids)
    assert {headers["User-Agent"] for _, headers in gateway.requests} == {"fanout-put-message/1 contoso-ingest/2"}


def test_a_sas_lifetime_below_two_hours_signs_sas_that_end_then():
    gateway = Gateway([])
    try:
        send(gateway, ["id-1"], sas_lifetime=600)
    finally:
        gateway.stop()
    ((path, _),) = gateway.requests
    (expiry,) = parse_qs(urlsplit(path).query)["se"]
    left = (datetime.fromisoformat(expiry.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
    assert 500 < left <= 600


class SlowToken:
    """An Entra ID credential whose token takes a while to come (a cold cache), failing `fails` times first."""

    def __init__(self, fails: int = 0, hangs: bool = False) -> None:
        self.calls = 0
        self._fails = fails
        self._hangs = hangs

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.calls += 1
        await asyncio.sleep(3600 if self._hangs else 0.2)
        if self.calls <= self._fails:
            raise OSError("identity endpoint unreachable")
        return AccessToken(f"token-{self.calls}", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


def send_with_token(
    gateway: Gateway,
    credential: SlowToken,
    texts: list[str],
    *,
    together: bool,
    attempts: int = 1,
    most: int = 8,
    timeout: float = 5.0,
) -> list[object]:
    async def run() -> list[object]:
        # the SDK takes a token only over https; the pool, which makes the connections, speaks plain http
        queue = QueueClient(gateway.url.replace("http://", "https://") + "/acct", "q", credential=credential)
        sender = PutMessageSender(
            ConnectionPool(f"{gateway.url}/acct/q", 4, None, timeout), queue, encoding="none", ttl=None,
            retry=RetryPolicy(attempts=attempts, base_delay=0.0, max_delay=0.0), pace=SendPace(most),
            on_retry=lambda: None,
            sas_lifetime=SAS_LIFETIME.default,
        )  # fmt: skip
        try:
            if together:
                return list(await asyncio.gather(*(sender.send(text) for text in texts), return_exceptions=True))
            results: list[object] = []
            for text in texts:
                try:
                    results.append(await sender.send(text))
                except QueueSendError as exc:
                    results.append(exc)
            return results
        finally:
            await queue.close()

    return asyncio.run(run())


def test_sends_that_start_together_on_a_cold_token_wait_for_it_and_all_carry_it():
    gateway, credential = Gateway([]), SlowToken()
    try:
        results = send_with_token(gateway, credential, [f"id-{n}" for n in range(4)], together=True)
    finally:
        gateway.stop()
    assert results == [None] * 4 and credential.calls == 1
    assert {headers["Authorization"] for _, headers in gateway.requests} == {"Bearer token-1"}


def test_a_token_that_cannot_be_had_fails_that_send_and_the_next_send_asks_again():
    gateway, credential = Gateway([]), SlowToken(fails=1)
    try:
        first, second = send_with_token(gateway, credential, ["id-0", "id-1"], together=False)
    finally:
        gateway.stop()
    assert isinstance(first, QueueSendError) and "no storage token: OSError: identity endpoint unreachable" in str(
        first
    )
    assert second is None and credential.calls == 2 and len(gateway.requests) == 1


def test_a_hostile_error_body_becomes_one_bounded_line_without_the_signature_it_echoes():
    code = b"Bad\r\nINFO forged log line"
    gateway = Gateway([400], code=code)
    try:
        with pytest.raises(QueueSendError) as raised:
            send(gateway, ["id-1"])
    finally:
        gateway.stop()
    reason = str(raised.value)
    assert "\n" not in reason and "\r" not in reason and "Bad INFO forged log line: The service failed." in reason


def test_an_echoed_signature_is_taken_out_of_the_reason_as_the_app_shows_it():
    echo = LoopbackApi(lambda path, headers: (400, {}, f"<html>refused {path}</html>".encode()))
    gateway = Gateway([])
    gateway.url = echo.url.removesuffix("/ids")
    try:
        with pytest.raises(QueueSendError) as raised:
            send(gateway, ["id-1"])
    finally:
        echo.stop()
        gateway.stop()
    reason = public_reason(str(raised.value))  # what a status, a log line or the CLI shows of it
    assert "sig=[redacted]" in reason and not re.search(r"sig=[A-Za-z0-9%]", reason)


# --- the class: any sequence of answers a gateway or the service may give -----------------------------

ANSWERS = st.lists(st.sampled_from([200, 204, 400, 401, 403, 404, 408, 409, 413, 429, 500, 501, 502, 503, 504, 505]),
                   max_size=8)  # fmt: skip
CODES = st.text(st.characters(codec="utf-8", exclude_characters="<&"), max_size=300).map(str.encode)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(script=ANSWERS, code=CODES)
def test_any_answers_end_the_send_stored_once_or_failed_in_one_line_within_the_attempts(script, code):
    """Nothing endless, nothing sent twice, nothing hidden: the send stops within its attempts (plus one
    renewal and the paced retries), is stored exactly once or fails with a one-line reason, and every send
    it started is over for the pace."""
    gateway = Gateway(script, code=code)
    pace = SendPace(8)
    failure: QueueSendError | None = None
    try:
        send(gateway, ["id-1"], attempts=3, pace=pace)
    except QueueSendError as exc:
        failure = exc
    finally:
        gateway.stop()
    answered = [*script, 201][: len(gateway.requests)]
    assert len(gateway.requests) <= 3 + 1 + PACED_RETRIES
    assert (failure is None) == (answered[-1] == 201) and answered.count(201) <= 1
    if failure is not None:
        reason = str(failure)
        assert "\n" not in reason and "\r" not in reason and "x-ms-client-request-id" in reason
        assert len(reason) < 1600
    assert pace.in_flight == 0


def test_a_token_that_fails_once_is_asked_again_within_the_sends_attempts():
    gateway, credential = Gateway([]), SlowToken(fails=1)
    try:
        (result,) = send_with_token(gateway, credential, ["id-0"], together=False, attempts=3)
    finally:
        gateway.stop()
    assert result is None and credential.calls == 2 and len(gateway.requests) == 1


def test_a_token_endpoint_that_never_answers_fails_the_send_within_the_storage_timeout():
    gateway, credential = Gateway([]), SlowToken(hangs=True)
    started = time.monotonic()
    try:
        results = send_with_token(gateway, credential, ["id-0", "id-1"], together=True, timeout=0.5)
    finally:
        gateway.stop()
    assert all(isinstance(result, QueueSendError) and "no storage token: TimeoutError" in str(result)
               for result in results)  # fmt: skip
    assert time.monotonic() - started < 10 and not gateway.requests
    assert credential.calls == 1  # the send that waited behind the hung fetch failed with it, not asking again


class RevokedFirstToken(Gateway):
    """Refuses `Bearer token-1` with 403, as storage does a token revoked early; stores the rest."""

    def _answer(self, path: str, headers: Message) -> Answer:
        self.requests.append((path, headers))
        if headers["Authorization"] == "Bearer token-1":
            return 403, {"x-ms-request-id": "revoked"}, FAILURE % (b"AuthenticationFailed", b"revoked")
        return 201, {}, b""


def test_sends_waiting_for_the_pace_go_out_with_the_head_renewed_meanwhile():
    gateway, credential = RevokedFirstToken([]), SlowToken()
    try:
        results = send_with_token(gateway, credential, [f"id-{n}" for n in range(12)], together=True, most=4)
    finally:
        gateway.stop()
    refused = [path for path, headers in gateway.requests if headers["Authorization"] == "Bearer token-1"]
    assert results == [None] * 12 and credential.calls == 2  # one renewal, shared
    assert len(refused) <= 4 and len(gateway.requests) == 12 + len(refused)  # only those out before it
