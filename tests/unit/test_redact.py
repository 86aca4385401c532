"""What reaches status, problem details and logs carries no configured secret, query string or URL password."""

from __future__ import annotations

import json
import logging

import pytest

from core.errors import SettingsError
from core.redact import REDACTED, Redactor, redact_logs
from core.settings import Settings

KEY = "s3cr3t-api-key-\u00e9"


@pytest.mark.parametrize(
    "text",
    [
        f'source \'default\' answered 401 Unauthorized: {{"echo": {{"x-api-key": "{KEY}"}}}}',
        f"LocalProtocolError: Illegal header value b'{KEY}\\n'",
        f"UnicodeEncodeError('ascii', '{KEY.encode('unicode_escape').decode()}', 15, 16)",
        f"header {KEY!r} was refused",
    ],
)
def test_a_configured_secret_is_redacted_in_every_form_it_takes(text):
    redacted = Redactor([KEY + "\n"])(text)
    assert "s3cr3t" not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET https://api.example.com/ids?key=abc failed", f"GET https://api.example.com/ids?{REDACTED} failed"),
        ("next link http://user:pw@host:8080/p?x=1", f"next link http://{REDACTED}@host:8080/p?{REDACTED}"),
        ("see https://host/ids#frag", "see https://host/ids#frag"),
        ("no url here, 1 item", "no url here, 1 item"),
    ],
)  # fmt: skip
def test_url_query_strings_and_credentials_are_redacted(text, expected):
    assert Redactor([])(text) == expected


def test_short_values_are_not_treated_as_secrets():
    assert Redactor(["1", "yes", " "])("1 page, yes") == "1 page, yes"


@pytest.fixture
def redacting_logs():
    plain = logging.getLogRecordFactory()
    redact_logs(Redactor([KEY]))
    yield
    logging.setLogRecordFactory(plain)


def test_log_lines_and_tracebacks_are_redacted_before_any_handler_sees_them(redacting_logs, caplog):
    caplog.set_level(logging.DEBUG)
    try:
        raise ValueError(f"the source refused {KEY}")
    except ValueError:
        logging.getLogger("fanout.test").exception("calling https://api.example.com/ids?api_key=%s with %s", KEY, KEY)

    (record,) = caplog.records
    assert "s3cr3t" not in caplog.text
    assert record.getMessage() == f"calling https://api.example.com/ids?{REDACTED} with {REDACTED}"
    assert f"ValueError: the source refused {REDACTED}" in caplog.text  # the traceback is there, redacted


def test_httpx_request_lines_are_not_logged(redacting_logs):
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)


@pytest.mark.parametrize("value", [KEY, "s3cr3t-api-key\n", "s3cr3t-api-key\u0000"])
def test_a_header_value_a_request_cannot_carry_is_refused_without_being_shown(value):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"SOURCE_HEADERS": json.dumps({"x-api-key": value})})
    assert "s3cr3t" not in str(refused.value)
    assert "'x-api-key'" in str(refused.value)


def test_a_source_urls_query_values_are_secrets_but_plain_numbers_are_not():
    settings = Settings.from_env(
        {"SOURCE_URL": "http://[::1/ids?api_key=k3y-value&count=10000#x", "SOURCE_HEADERS": '{"x-api-key": "h3ader"}'}
    )
    assert sorted(settings.secrets) == ["h3ader", "k3y-value"]
