"""Text that leaves the app (a run's error in its status, problem details, events, logs, CLI output) with
secrets taken out: the configured secret values (every source's header values), URL query strings, URL
credentials and the credentials of a `Basic`/`Bearer` authorization.

What a redactor promises, for every configured secret of at least `_SHORTEST_SECRET` characters: neither
the secret nor any run of `PIECE` of its characters survives, as written or in any of the forms a source's
echo or an exception gives it (JSON and Python string escapes, `repr`, `unicode_escape`, percent-encoding
with or without `+` for a space, HTML character references, base64 and URL-safe base64, padded or not and
at any offset in a longer base64 text; escapes are also read back however they are written: lowercase,
some characters left as they are). A shorter secret goes whole, in every form; so does a head or tail of
one (at least `_SHORTEST_SECRET` characters) quoted as cut (`tok_8f…`, `…3a9b`, `tok_8f...`). Where pieces
match, the whole span they cover goes, as one `[redacted]`.

It runs on every log record: everything is worked out in `__init__`, and a text is read in time linear in
its length (its windows of `PIECE` characters are looked up in a set, one in `_BLOCK` first).

Text that leaves the app goes through `public_text(text, limit)`: redacted with the process's redactor,
then cut (never the other way round: a cut secret is no longer known). The process's redactor holds every
secret `install`ed (or given to `redact_logs`) so far, and the latest tokens handed to `install_token`;
`redact(text)` uses it.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import html
import json
import logging
import re
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import accumulate
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from core.run_scope import scoped_record

REDACTED = "[redacted]"
PIECE = 12  # no run of this many characters of a secret, or of any of its forms, survives redaction
_SHORTEST_SECRET = 4  # shorter values (say "1" or "yes") would redact ordinary words
_BLOCK = PIECE // 2  # every window of PIECE characters holds a whole block of _BLOCK starting at a multiple of it
_MOST_PASSES = 4  # a second pass takes what the first left across a `[redacted]`; later ones find nothing

# A URL's scheme starts where a run of scheme characters starts (no retrying inside a run: a long word
# would be read again from each of its letters) and holds a letter; every quantifier is possessive, and a
# URL without a query (or credentials) still matches, so the next search starts after it: linear time.
_SCHEME = r"(?<![a-zA-Z0-9+.-])[0-9+.-]*+[a-zA-Z][a-zA-Z0-9+.-]*+://"
_URL_QUERY = re.compile(rf"(?P<url>{_SCHEME}[^\s?#'\"<>]*+)(?P<query>\?[^\s#'\"<>]*+)?")
_URL_USERINFO = re.compile(rf"(?P<scheme>{_SCHEME})(?P<userinfo>[^/\s@'\"<>]*+@)?")
_AUTHORIZATION = re.compile(r"\b(?P<scheme>[Bb]asic|BASIC|[Bb]earer|BEARER)[ \t]++(?P<credentials>[\w.~+/-]++=*+)")
# A SAS's signature anywhere (a bare request path a gateway echoes has no scheme for _URL_QUERY to find):
# the app mints SAS from its key, so no configured secret names them.
_SAS_SIGNATURE = re.compile(r"(?<![A-Za-z0-9_-])[Ss][Ii][Gg]=(?P<signature>[^&\s'\"<>]++)")
_CUT_MARK = re.compile(r"…|\.{3,}+|\*{3,}+")  # how a quoted secret is shown cut: `tok_8f…`, `…3a9b`, `tok_8f***`


class Redactor:
    """Takes `secrets` (and what `_parts` finds in them), URL query strings and credentials, and SAS
    signatures (`sig=…`) out of a text.
    Immutable once built: one is shared by every thread."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = frozenset(secrets)  # as given: `install` joins redactors by their secrets
        forms = {form for secret in self.secrets for part in _parts(secret) for form in _forms(part)}
        forms = {form for form in forms if len(form) >= _SHORTEST_SECRET}
        self._pieces = frozenset(form[i : i + PIECE] for form in forms for i in range(len(form) - PIECE + 1))
        long_forms = [form for form in forms if len(form) >= PIECE]  # the blocks of their pieces: their own
        self._blocks = frozenset(form[i : i + _BLOCK] for form in long_forms for i in range(len(form) - _BLOCK + 1))
        self._whole = tuple(sorted(form for form in forms if len(form) < PIECE))  # shorter forms: found whole
        cut_lengths = range(_SHORTEST_SECRET, PIECE)  # a longer cut piece is found by its pieces
        self._heads = frozenset(form[:n] for form in forms for n in cut_lengths if n < len(form))
        self._tails = frozenset(form[-n:] for form in forms for n in cut_lengths if n < len(form))
        self._head_lengths = _lengths_by(self._heads, lambda head: head[-_SHORTEST_SECRET:])
        self._tail_lengths = _lengths_by(self._tails, lambda tail: tail[:_SHORTEST_SECRET])
        # A text redacted once holds a piece of a secret again only across a `[redacted]`: only if one has a bracket
        self._passes = _MOST_PASSES if any("[" in form or "]" in form for form in forms) else 1

    def __call__(self, text: str) -> str:
        for _ in range(self._passes):
            redacted = self._redact_once(text)
            if redacted == text:
                break
            text = redacted
        return text

    def _redact_once(self, text: str) -> str:
        spans = self._secret_spans(text) if self._pieces or self._whole else []
        for url in _URL_QUERY.finditer(text):
            if url["query"] is not None:
                spans.append((url.start("query") + 1, url.end("query")))
        for url in _URL_USERINFO.finditer(text):
            if url["userinfo"] is not None:
                spans.append((url.start("userinfo"), url.end("userinfo") - 1))
        for signature in _SAS_SIGNATURE.finditer(text):
            spans.append(signature.span("signature"))
        for authorization in _AUTHORIZATION.finditer(text):
            if _is_credential(authorization["scheme"], authorization["credentials"]):
                spans.append(authorization.span("credentials"))
        return _replaced(text, spans) if spans else text

    def _secret_spans(self, text: str) -> list[tuple[int, int]]:
        spans = self._find(text)
        for escapes in _ESCAPES:
            if escapes.trigger in text and (view := _View(text, escapes)).text != text:
                for start, end in view.regions(PIECE - 1):  # where the view differs from the text, and around
                    spans += [view.original(start + a, start + b) for a, b in self._find(view.text[start:end])]
        return spans

    def _find(self, text: str) -> list[tuple[int, int]]:
        """Where `text` holds a piece of a secret, a whole short form of one, or one's cut head or tail."""
        spans: list[tuple[int, int]] = []
        length, last = len(text), len(text) - PIECE
        if self._pieces and last >= 0:
            pieces, blocks, unread = self._pieces, self._blocks, 0
            hits = [p for p in range(0, length - _BLOCK + 1, _BLOCK) if text[p : p + _BLOCK] in blocks]
            for p in hits:  # the windows holding block p: those starting from p - _BLOCK to p
                for start in range(max(p - _BLOCK, unread), min(p, last) + 1):
                    if text[start : start + PIECE] in pieces:
                        if spans and start <= spans[-1][1]:
                            spans[-1] = (spans[-1][0], start + PIECE)
                        else:
                            spans.append((start, start + PIECE))
                unread = max(unread, min(p, last) + 1)
        for form in self._whole:
            start = text.find(form)
            while start >= 0:
                spans.append((start, start + len(form)))
                start = text.find(form, start + 1)
        if self._heads:
            for mark in _CUT_MARK.finditer(text):
                spans += self._cut_pieces(text, *mark.span())
        return spans

    def _cut_pieces(self, text: str, mark: int, after: int) -> list[tuple[int, int]]:
        """The head of a secret right before a cut mark, and the tail of one right after it: the longest.
        A run of dots or stars may begin (or end) with the secret's own: the mark is its last (first) 3."""
        spans = []
        if after - mark == 1:  # `…`
            ends: Iterable[int] = (mark,)
            starts: Iterable[int] = (after,)
        else:
            ends = range(mark, min(after - 3, mark + PIECE - 1) + 1)
            starts = range(max(mark + 3, after - PIECE + 1), after + 1)
        for end in ends:
            for n in self._head_lengths.get(text[max(end - _SHORTEST_SECRET, 0) : end], ()):
                if text[end - n : end] in self._heads and n <= end:
                    spans.append((end - n, end))
                    break
        for start in starts:
            for n in self._tail_lengths.get(text[start : start + _SHORTEST_SECRET], ()):
                if text[start : start + n] in self._tails and start + n <= len(text):
                    spans.append((start, start + n))
                    break
        return spans


def _lengths_by(pieces: frozenset[str], edge: Callable[[str], str]) -> dict[str, tuple[int, ...]]:
    """The lengths of the pieces with each edge, the longest first."""
    lengths: dict[str, set[int]] = {}
    for piece in pieces:
        lengths.setdefault(edge(piece), set()).add(len(piece))
    return {key: tuple(sorted(found, reverse=True)) for key, found in lengths.items()}


def _parts(secret: str) -> set[str]:
    """The secret as given and stripped, and what in it is a secret on its own: the credentials after an
    authorization scheme (`Bearer tok_…`), a Basic credential's `user:password` and password, a URL's."""
    parts = {secret, secret.strip(), unquote(secret)}  # a percent-encoded value (a SAS) is echoed decoded too
    scheme, _, credentials = secret.strip().partition(" ")
    if credentials.strip():
        parts.add(credentials.strip())
        if scheme.lower() == "basic":
            parts |= set(_basic_secrets(credentials.strip()))
    if "://" in secret:
        parts |= set(userinfo_secrets(secret))
    return {part for part in parts if len(part.strip()) >= _SHORTEST_SECRET}


def _forms(secret: str) -> set[str]:
    """The secret as text shows it: as written, escaped as a Python or JSON string, percent-encoded,
    HTML-escaped, base64. (Escapes written some other way are read back by `_ESCAPES`.)"""
    data = _bytes(secret)
    forms = {
        secret,
        repr(secret)[1:-1],
        repr(secret + "'\"")[1:-4],  # as part of a repr that quotes with ' and so escapes it
        ascii(secret)[1:-1],
        secret.encode("unicode_escape").decode("ascii"),
        repr(data)[2:-1],  # bytes, as httpx's errors show a header value
        repr(data + b"'\"")[2:-4],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        *(encoded for encode in (quote, quote_plus) for encoded in _both_cases(encode(data, safe=""))),
        html.escape(secret),
        html.escape(secret).replace("&quot;", "&#34;").replace("&#x27;", "&#39;"),
    }
    return forms | _base64_forms(data)


def _both_cases(percent_encoded: str) -> tuple[str, str]:
    """A percent-encoded text with its escapes' hex digits upper-case and lower-case. Found as written, not only
    decoded: a `%` just before one (`%` + `00%3a…`) would take its first digits into another escape."""
    return percent_encoded, _PERCENT_HEX.sub(lambda escape: escape[0].lower(), percent_encoded)


def _base64_forms(data: bytes) -> set[str]:
    """Base64 and URL-safe base64, padded and not; and the characters made of the secret's bits alone
    wherever it starts in a longer base64 text (`user:` before a password in a Basic credential)."""
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode("ascii")
        forms |= {whole, whole.rstrip("=")}
        for offset in (0, 1, 2):
            shifted = encode(bytes(offset) + data).decode("ascii")
            forms.add(shifted[-(-8 * offset // 6) : 8 * (offset + len(data)) // 6])
    return forms


def _bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # an environment's undecodable bytes, as they were
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _basic_secrets(credentials: str) -> list[str]:
    """A Basic credential's `user:password` and password (the user alone is no secret)."""
    try:
        decoded = base64.b64decode(credentials + "=" * (-len(credentials) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return []
    _, colon, password = decoded.partition(":")
    return [decoded, password] if colon and password else []


def userinfo_secrets(url: str) -> list[str]:
    """The secrets in a URL's `user:password@`: the two together and the password, as written and decoded
    (a Basic authorization carries them base64-encoded: the redactor finds those forms too)."""
    authority = url.partition("://")[2]
    authority = authority[: min((i for i in map(authority.find, "/?#") if i >= 0), default=len(authority))]
    userinfo = authority.rpartition("@")[0]
    password = userinfo.partition(":")[2]
    return [value for value in dict.fromkeys([userinfo, unquote(userinfo), password, unquote(password)]) if value]


@dataclass(frozen=True)
class _Escapes:
    """One way of escaping characters: a text that holds `trigger` is also read with each `token` decoded."""

    trigger: str
    token: re.Pattern[str]
    decode: Callable[[str], str]  # the token itself when it is no escape


def _unquoted(token: str) -> str:
    try:
        return unquote(token, errors="strict")
    except UnicodeDecodeError:
        return token


def _form_unquoted(token: str) -> str:
    return " " if token == "+" else _unquoted(token)


_BACKSLASHED = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "a": "\a", "/": "/"}


def _unbackslashed(token: str) -> str:
    escape = token[1:]
    if escape[0] in "01234567":
        return chr(int(escape, 8))
    if len(escape) == 1:
        return _BACKSLASHED.get(escape, escape)
    if "\\" in escape:  # a JSON surrogate pair
        decoded: str = json.loads(f'"{token}"')
        return decoded
    code = int(escape[1:], 16)
    return chr(code) if code <= 0x10FFFF else token


_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")
_PERCENT_TOKEN = r"%[0-7][0-9A-Fa-f]|%[C-Fc-f][0-9A-Fa-f](?:%[89ABab][0-9A-Fa-f]){1,3}"  # one character's bytes
_HTML_TOKEN = r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?"
_BACKSLASH_TOKEN = (
    r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a JSON surrogate pair
    r"|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{1,3}|[\s\S])"
)
_ESCAPES = (
    _Escapes("%", re.compile(_PERCENT_TOKEN), lru_cache(4096)(_unquoted)),
    _Escapes("+", re.compile(rf"\+|{_PERCENT_TOKEN}"), lru_cache(4096)(_form_unquoted)),
    _Escapes("&", re.compile(_HTML_TOKEN), lru_cache(4096)(html.unescape)),
    _Escapes("\\", re.compile(_BACKSLASH_TOKEN), lru_cache(4096)(_unbackslashed)),
)


class _View:
    """A text with its escapes decoded, and where each of its characters came from (worked out only when
    asked: most views hold no secret)."""

    def __init__(self, text: str, escapes: _Escapes) -> None:
        self._text, self._escapes = text, escapes
        self.text, self._count = escapes.token.subn(lambda token: escapes.decode(token[0]), text)

    def regions(self, around: int) -> list[tuple[int, int]]:
        """The view's spans within `around` characters of a decoded escape (elsewhere it is the text)."""
        if self._count * 2 * around >= len(self.text):
            return [(0, len(self.text))]
        regions: list[tuple[int, int]] = []
        for start, size in zip(self._starts, self._sizes, strict=True):
            region_start, region_end = max(start - around, 0), start + size + around
            if regions and region_start <= regions[-1][1]:
                regions[-1] = (regions[-1][0], region_end)
            else:
                regions.append((region_start, region_end))
        return regions

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The span of the text that the view's `start:end` was read from, its escapes whole."""
        return self._origin(start)[0], self._origin(end - 1)[1]

    def _origin(self, position: int) -> tuple[int, int]:
        k = bisect.bisect_right(self._starts, position) - 1
        if k < 0:
            return position, position + 1
        if position < self._starts[k] + self._sizes[k]:
            return self._origins[k], self._origins[k] + self._lengths[k]
        origin = self._origins[k] + self._lengths[k] + position - self._starts[k] - self._sizes[k]
        return origin, origin + 1

    @cached_property
    def _tokens(self) -> list[tuple[int, int, str]]:
        text, decode = self._text, self._escapes.decode
        tokens = [(token.start(), token.end(), decode(token[0])) for token in self._escapes.token.finditer(text)]
        return [(start, end, decoded) for start, end, decoded in tokens if decoded != text[start:end]]

    @cached_property
    def _origins(self) -> list[int]:  # where each decoded escape starts in the text,
        return [start for start, _, _ in self._tokens]

    @cached_property
    def _lengths(self) -> list[int]:  # its length there,
        return [end - start for start, end, _ in self._tokens]

    @cached_property
    def _sizes(self) -> list[int]:  # its length in the view,
        return [len(decoded) for _, _, decoded in self._tokens]

    @cached_property
    def _starts(self) -> list[int]:  # and where it starts there
        shrunk = accumulate((length - size for length, size in zip(self._lengths, self._sizes, strict=True)), initial=0)
        return [origin - before for origin, before in zip(self._origins, shrunk, strict=False)]


def _replaced(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each run of overlapping or touching spans (and any `[redacted]` they touch) as one
    `[redacted]`."""
    marker = text.find(REDACTED)
    while marker >= 0:
        spans.append((marker, marker + len(REDACTED)))
        marker = text.find(REDACTED, marker + len(REDACTED))
    spans.sort()
    parts, read, start, end = [], 0, *spans[0]
    for span_start, span_end in spans[1:]:
        if span_start <= end:
            end = max(end, span_end)
            continue
        parts += [text[read:start], REDACTED]
        read, start, end = end, span_start, span_end
    parts += [text[read:start], REDACTED, text[end:]]
    return "".join(parts)


def _is_credential(scheme: str, credentials: str) -> bool:
    if scheme.lower() == "basic":  # base64 of `user:password`: nothing else is taken
        return bool(_basic_secrets(credentials))
    # a token has letters and digits; a word ("Bearer authentication") is left
    return len(credentials) >= 8 and any(c.isdigit() for c in credentials) and any(c.isalpha() for c in credentials)


def cut(text: str, limit: int) -> str:
    """`text`, or as much of it as fits in `limit` characters with `… (N more characters)` after it (a
    `[redacted]` is not cut in two)."""
    if len(text) <= limit:
        return text
    kept = limit
    while True:
        mark = f"… ({len(text) - kept} more characters)"
        fits = limit - len(mark)
        if fits < 0:
            return text[: max(limit, 0)]  # no room for the mark
        marker = text.find(REDACTED, max(fits - len(REDACTED) + 1, 0), fits + len(REDACTED) - 1)
        if 0 <= marker < fits:  # a `[redacted]` the cut goes through: it goes whole
            fits = marker
        if fits == kept:
            return text[:kept] + mark
        kept = fits


# The process's redactor: every secret installed so far (tests build several contexts, each with secrets
# of its own, in one process; redacting more is always safe).
_installed = Redactor(())
_installing = threading.Lock()


def install(redactor: Redactor) -> Redactor:
    """Adds `redactor`'s secrets to the process's redactor (the one `redact` and the logs use); returns it."""
    global _installed
    with _installing:
        if not redactor.secrets <= _installed.secrets:
            _installed = Redactor(_installed.secrets | redactor.secrets)
        return _installed


TOKENS_KEPT = 2  # a holder's tokens the redactor knows: the one in use and the one before it
_tokens: dict[Hashable, tuple[str, ...]] = {}


def install_token(holder: Hashable, token: str) -> None:
    """Adds a token the app was given (a source's bearer token, `holder` the sign-in it is for) to the
    process's redactor, with the holder's token before it (a line about that one may still be on its way);
    older ones are let go, so that a process renewing tokens for days keeps a redactor of bounded size."""
    global _installed
    with _installing:
        held = _tokens.get(holder, ())
        if token in held:
            return
        kept = _tokens[holder] = (token, *held)[:TOKENS_KEPT]
        _installed = Redactor((_installed.secrets - (set(held) - set(kept))) | {token})


def redact(text: str) -> str:
    """`text` without any secret installed so far in this process, URL query string or URL credentials."""
    return _installed(text)


REASON_CHARS = 1000  # of a failure's reason kept with a run or a chunk, and shown in its status and problem answers


def public_reason(text: str) -> str:
    """A failure's reason as it may be kept and shown: redacted, then cut to REASON_CHARS."""
    return public_text(text, REASON_CHARS)


def public_text(text: str, limit: int) -> str:
    """What may leave the app of `text` (an error, a problem answer, an event, CLI output): redacted with
    every secret installed in the process, then cut to `limit` characters (cutting first could split a
    secret and leave a piece the redactor would no longer know)."""
    return cut(redact(text), limit)


_SCOPED_RECORDS = scoped_record  # records carry their run's id, then are redacted (core/run_scope.py)


def redact_logs(redactor: Redactor) -> None:
    """Installs `redactor` (its secrets join those installed before); from now on every log record's text
    and traceback pass through the process's redactor before any handler sees them (the Functions host's,
    Application Insights', a test's)."""
    install(redactor)
    logging.setLogRecordFactory(_redacted_record)


def _redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _SCOPED_RECORDS(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a broken logging call: its format string is kept, its arguments (unredacted) dropped
        record.args = None
        return record
    record.msg, record.args = redact(message), None
    if record.exc_info:
        _redact_exception(record)
    return record


def _redact_exception(record: logging.LogRecord) -> None:
    """Replaces the record's exception object with redacted text: `exc_text` (what logging's Formatter
    prints) and the OpenTelemetry exception attributes (what the OTel LoggingHandler would have taken from
    the object, and what Application Insights makes an exception of). The object goes: handlers that read
    it would show it unredacted."""
    exc_type, exc, _ = record.exc_info or (None, None, None)
    record.exc_text = redact(logging.Formatter().formatException(record.exc_info))  # type: ignore[arg-type]
    record.exc_info = None
    attributes = vars(record)
    if exc_type is not None:
        attributes["exception.type"] = exc_type.__name__
    if exc is not None:
        attributes["exception.message"] = redact(str(exc))
    attributes["exception.stacktrace"] = record.exc_text
