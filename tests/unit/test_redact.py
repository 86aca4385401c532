"""What reaches status, problem details and logs carries no configured secret, query string or URL password."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import time
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from core import redact as redaction
from core.errors import SettingsError
from core.redact import (
    PIECE,
    REDACTED,
    Redactor,
    cut,
    install,
    public_text,
    redact,
    redact_logs,
    userinfo_secrets,
)
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


def test_an_exception_reaches_opentelemetry_redacted_with_its_type_and_trace(redacting_logs):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    logger = logging.getLogger("test.otel")
    logger.addHandler(handler)
    try:
        raise RuntimeError(f"boom http://h/x?api_key={KEY}")
    except RuntimeError:
        logger.exception("the chunk failed")
    finally:
        logger.removeHandler(handler)

    (exported,) = exporter.get_finished_logs()
    attributes = dict(exported.log_record.attributes or {})
    assert KEY not in repr(attributes) and KEY not in str(exported.log_record.body)
    assert attributes["exception.type"] == "RuntimeError"
    assert attributes["exception.message"] == f"boom http://h/x?{REDACTED}"
    assert "Traceback" in attributes["exception.stacktrace"] and REDACTED in attributes["exception.stacktrace"]


# What a source (or an exception) makes of a secret: the redactor must know every one of them, and read
# back the escapes it does not list (lowercase percent-escapes, other characters left unescaped).
ENCODINGS = {
    "as written": lambda s: s,
    "JSON": lambda s: json.dumps(s)[1:-1],
    "JSON, not ASCII-only": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "percent-encoded": lambda s: quote(s, safe=""),
    "percent-encoded, / kept": quote,
    "percent-encoded, as encodeURIComponent": lambda s: quote(s, safe="!'()*"),
    "percent-encoded, lowercase": lambda s: re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(s, safe="")),
    "form-encoded": lambda s: quote_plus(s, safe=""),
    "HTML": html.escape,
    "HTML, numeric": lambda s: html.escape(s).replace("&quot;", "&#34;").replace("&#x27;", "&#39;"),
    "HTML, quotes left": lambda s: html.escape(s, quote=False),
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64, unpadded": lambda s: base64.b64encode(s.encode()).decode().rstrip("="),
    "URL-safe base64": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    "URL-safe base64, unpadded": lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    "repr": lambda s: repr(s)[1:-1],
    "unicode_escape": lambda s: s.encode("unicode_escape").decode(),
    "bytes repr": lambda s: repr(s.encode())[2:-1],
}

SECRET_CHARACTERS = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), st.sampled_from('"\\ %&<+é€ß😀')
)  # fmt: skip
SECRETS = st.text(SECRET_CHARACTERS, min_size=4, max_size=80).filter(lambda s: len(s.strip()) >= 4)
LONG_SECRETS = SECRETS.filter(lambda s: len(s) >= PIECE)
SURROUNDINGS = st.one_of(
    st.text(max_size=30), st.text(st.sampled_from("%&\\+;#xu0123456789abcdefABCDEF\"'<> .…*[]"), max_size=20)
)  # any text, or one of escapes begun and cut marks (next to a form, they must not hide it)


def leaks(secret: str, text: str) -> list[str]:
    """The forms of `secret` in `text`: a whole encoding, or a PIECE-long run of one (outside a `[redacted]`
    for a secret such as "[red")."""
    found = []
    unmarked = text.replace(REDACTED, "\0")
    for encode in ENCODINGS.values():
        form = encode(secret)
        pieces = [form] if len(form) < PIECE else [form[i : i + PIECE] for i in range(len(form) - PIECE + 1)]
        found += [piece for piece in pieces if piece in (unmarked if piece in REDACTED else text)]
    return found


@settings(max_examples=150, deadline=None)
@given(secret=SECRETS, encoding=st.sampled_from(sorted(ENCODINGS)), before=SURROUNDINGS, after=SURROUNDINGS)
def test_no_form_of_a_secret_nor_a_piece_of_one_survives(secret, encoding, before, after):
    text = before + ENCODINGS[encoding](secret) + after
    redacted = Redactor([secret])(text)
    assert leaks(secret, redacted) == []
    assert ENCODINGS[encoding](secret) not in redacted


@settings(max_examples=150, deadline=None)
@given(secret=LONG_SECRETS, data=st.data(), encoding=st.sampled_from(sorted(ENCODINGS)), before=SURROUNDINGS,
       after=SURROUNDINGS)  # fmt: skip
def test_a_piece_of_a_secret_is_redacted_in_every_encoding(secret, data, encoding, before, after):
    start = data.draw(st.integers(0, len(secret) - PIECE), label="start")
    piece = ENCODINGS[encoding](secret[start : start + PIECE])
    redacted = Redactor([secret])(before + piece + after)
    assert leaks(secret, redacted) == []
    assert piece not in redacted


@settings(max_examples=100, deadline=None)
@given(secret=SECRETS, n=st.integers(4, 11), mark=st.sampled_from(["…", "...", "***"]), before=SURROUNDINGS)
def test_a_head_or_tail_of_a_secret_quoted_as_cut_is_redacted(secret, n, mark, before):
    secret = secret.strip()  # the token of a `Bearer` header value
    assume(n < len(secret))
    head, tail = secret[:n], secret[-n:]
    redacted = Redactor([f"Bearer {secret}"])(f"{before} token {head}{mark} has expired, …{tail} too")
    assert f"{head}{mark}" not in redacted
    assert f"…{tail} too" not in redacted


def mentions(secret: str, text: str) -> bool:
    """Whether `text`, or `text` with its escapes read, has 4 characters of any form of `secret` in it."""
    forms = [encode(secret) for encode in ENCODINGS.values()]
    forms += [base64.b64encode(bytes(offset) + secret.encode()).decode() for offset in (1, 2)]
    forms += [form.replace("+", "-").replace("/", "_") for form in forms]
    read = [text, unquote(text), unquote_plus(text), html.unescape(text), re.sub(r"\\(.)", r"\1", text)]
    return any(form[i : i + 4] in view for form in forms for i in range(len(form) - 3) for view in read)


@settings(max_examples=150, deadline=None)
@given(secret=SECRETS, text=st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    ["%22", "%e2%82%ac", "+", "&quot;", "&#34;", "&amp;", '\\"', "\\u00e9", "\\\\", "…", "...", REDACTED, "Basic x"]
))).map("".join))  # fmt: skip
def test_a_text_without_the_secret_is_left_as_it_is(secret, text):
    assume(not mentions(secret, text))
    assert Redactor([secret])(text) == Redactor([])(text)
    if "://" not in text:
        assert Redactor([])(text) == text


@settings(max_examples=100, deadline=None)
@given(secret=SECRETS, text=st.text(SECRET_CHARACTERS, max_size=100))
def test_redacting_twice_changes_nothing_more(secret, text):
    redactor = Redactor([secret])
    once = redactor(text + secret + text)
    assert redactor(once) == once


@settings(max_examples=100, deadline=None)
@given(secret=LONG_SECRETS, before=st.text(max_size=60), after=st.text(max_size=60), limit=st.integers(0, 150))
def test_a_text_is_cut_after_it_is_redacted(secret, before, after, limit):
    redacted = Redactor([secret])(before + secret + after)
    public = cut(redacted, limit)
    assert len(public) <= limit
    assert not any(secret[i : i + PIECE] in public for i in range(len(secret) - PIECE + 1))
    if len(redacted) <= limit:
        assert public == redacted
    elif limit >= 30:
        kept = public.rpartition("… (")[0]
        assert public == f"{kept}… ({len(redacted) - len(kept)} more characters)"
        assert redacted.startswith(kept)


@pytest.fixture
def nothing_installed(monkeypatch):
    """The process's redactor as it starts, for this test only (what others installed is put back)."""
    monkeypatch.setattr(redaction, "_installed", Redactor([]))


def test_public_text_redacts_with_what_is_installed_then_cuts(nothing_installed):
    secret = "tok_8f3a9b2c1d0e7f6a5b4c3d2e"
    install(Redactor([secret]))
    text = "x" * 30 + secret + "y" * 100  # the cut falls inside the secret
    assert public_text(text, 40) == "x" * 17 + "… (123 more characters)"  # of "x" * 30 + REDACTED + "y" * 100
    assert public_text(text, 1000) == "x" * 30 + REDACTED + "y" * 100


def test_a_cut_counts_what_it_leaves_out_within_the_limit_and_keeps_a_redaction_whole():
    assert cut("a" * 100, 40) == "a" * 18 + "… (82 more characters)"
    assert cut("a" * 100, 100) == "a" * 100
    assert cut("ab" + REDACTED * 5, 30) == "ab… (50 more characters)"
    assert cut("a" * 100, 5) == "aaaaa"  # no room for the count


def test_installed_secrets_add_up(nothing_installed):
    install(Redactor(["first-secret-value"]))
    install(Redactor(["second-secret-value"]))
    assert redact("first-secret-value and second-secret-value") == f"{REDACTED} and {REDACTED}"
    assert install(Redactor(["first-secret-value"])).secrets == {"first-secret-value", "second-secret-value"}


def test_logs_are_redacted_with_every_secret_installed(nothing_installed, caplog):
    plain = logging.getLogRecordFactory()
    try:
        redact_logs(Redactor(["first-secret-value"]))
        redact_logs(Redactor(["second-secret-value"]))
        caplog.set_level(logging.INFO)
        logging.getLogger("fanout.test").info("%s then %s", "first-secret-value", "second-secret-value")
    finally:
        logging.setLogRecordFactory(plain)
    assert caplog.records[-1].getMessage() == f"{REDACTED} then {REDACTED}"


TOKEN = "tok_8f3a9b2c1d0e7f6a5b4c"
PASSWORD = 'pa"ss wo%rd&<é'


@pytest.mark.parametrize(
    ("secrets", "text"),
    [
        ([f"Bearer {TOKEN}"], f"401: token {TOKEN[:6]}… has expired"),
        ([f"Bearer {TOKEN}"], f"401: token {TOKEN[:7]}... has expired"),
        ([f"Bearer {TOKEN}"], f"401: token …{TOKEN[-6:]} has expired"),
        ([f"Bearer {TOKEN}"], f"401: token {TOKEN[:14]} has expired"),
        (userinfo_secrets("https://alice:s3cret-pw@api.example.com/ids"),
         "401: Authorization: Basic " + base64.b64encode(b"alice:s3cret-pw").decode()),
        ([f"Basic {base64.b64encode(b'alice:s3cret-pw').decode()}"], "401: wrong password s3cret-pw"),
        ([PASSWORD], json.dumps({"echo": PASSWORD})),
        ([PASSWORD], f"401: /login?password={quote_plus(PASSWORD)}"),
        ([PASSWORD], quote(PASSWORD, safe="\"&<")),
        ([PASSWORD], f"<p>{html.escape(PASSWORD)}</p>"),
        ([PASSWORD], f"<p>{html.escape(PASSWORD).replace('&quot;', '&#34;')}</p>"),
        ([PASSWORD], "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()),
        ([PASSWORD], "x-token: " + base64.urlsafe_b64encode(PASSWORD.encode()).decode().rstrip("=")),
        ([PASSWORD], f"KeyError({PASSWORD!r})"),
        ([PASSWORD], PASSWORD.encode("unicode_escape").decode()),
    ],
)  # fmt: skip
def test_what_a_refusing_source_echoes_is_redacted(secrets, text):
    redacted = Redactor(secrets)(text)
    assert REDACTED in redacted
    for secret in secrets:
        assert leaks(secret, redacted) == []
    assert "s3cret" not in redacted and "tok_8f" not in redacted and "wo%rd" not in redacted


def test_credentials_after_basic_or_bearer_are_redacted_without_a_configured_secret():
    basic = base64.b64encode(b"alice:pw").decode()
    assert Redactor([])(f"Authorization: Basic {basic}") == f"Authorization: Basic {REDACTED}"
    assert Redactor([])("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x1") == f"Bearer {REDACTED}"
    assert (
        Redactor([])("Basic auth failed: Bearer authentication needed")
        == "Basic auth failed: Bearer authentication needed"
    )


@pytest.mark.parametrize("secret", ["redacted", "[redacted]", "d][re", "acted]-and-more-text"])
def test_a_secret_like_the_redaction_mark_is_redacted_once(secret):
    redactor = Redactor([secret])
    once = redactor(f"x {secret} y [redacted] z {secret}")
    assert once == f"x {REDACTED} y {REDACTED} z {REDACTED}"
    assert redactor(once) == once


def test_what_is_left_next_to_a_redaction_is_read_again():
    assert Redactor(["]'0123456789"])("https://h/?q'0123456789") == f"https://h/?{REDACTED}"


HOSTILE = {
    "schemes": "a://" * 250_000,
    "queries": "a://a?" * 170_000,
    "a word": "a" * 1_000_000,
    "credentials": "a://a:" * 170_000,
    "percent-escapes": "%41" * 333_333,
    "form-escapes": "a+" * 500_000,
    "backslashes": "\\n" * 500_000,
    "entities": "&quot;" * 170_000,
    "cut marks": "tok_8f…" * 140_000,
    "the secret": TOKEN * 40_000,
    "signatures": "sig=" * 250_000,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_megabyte_is_redacted_in_linear_time(text):
    """Linear: well under a second a megabyte on an idle machine; a quadratic scan of one takes minutes. The
    bound leaves room for a loaded machine, not for another complexity."""
    for redactor in (Redactor([]), Redactor([f"Bearer {TOKEN}", *(f"{TOKEN}-{n}" for n in range(19))])):
        started = time.perf_counter()
        redactor(text)
        assert time.perf_counter() - started < 10.0


@given(
    before=st.text(max_size=40).filter(lambda text: not text[-1:].isalnum() and not text.endswith(("_", "-"))),
    signature=st.text(st.sampled_from("ABCDEFabcdef0123456789%+/="), min_size=8, max_size=60),
    after=st.sampled_from(["", "&se=2026-12-02", " and more", "'", "</Message>"]),
    key=st.sampled_from(["sig", "SIG", "Sig"]),
)
def test_a_sas_signature_is_redacted_wherever_it_stands(before, signature, after, key):
    """A SAS the app minted is no configured secret: its signature goes whatever text echoes it (a bare
    request path, a query without its URL, an error body)."""
    text = f"{before}{key}={signature}{after}"
    assert Redactor([])(text).endswith(f"{key}=[redacted]{after}")
