"""What reaches status, problem details and logs carries no configured secret, query string or URL password."""

from __future__ import annotations

import pytest

from core.redact import REDACTED, Redactor

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
