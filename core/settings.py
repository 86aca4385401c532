"""Configuration from environment variables: one table (`TABLE`) says each setting's name, type,
default, bounds and meaning, once. `Settings.from_env` reads it; docs/settings.md's table is rendered from it
(`python -m fanout settings-table`) and a test keeps the two equal."""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

from core.contract import partition_queue_names
from core.errors import SettingsError
from core.network import Network
from core.proxy import Proxies, proxy_of
from core.redact import userinfo_secrets
from core.retry import RetryPolicy

T = TypeVar("T")
DEFAULT_SOURCE = "default"
DEMO_API_PORT = 7072
MAX_CHUNK_SIZE = 32_000
SHORT_NUMBER_DIGITS = 8  # a source URL's query value of fewer digits is no secret (a count, a page size)
WEBHOOK_SETUP_SECONDS = 30.0  # of a webhook delivery, before its first `POST`: an Entra token, a connection
_NAMED_SOURCE_URL = re.compile(r"SOURCE_([A-Z0-9][A-Z0-9_]*?)__URL")

MessageEncoding = Literal["base64", "none"]
MESSAGE_ENCODINGS: tuple[MessageEncoding, ...] = ("base64", "none")
LargeMessageMode = Literal["claim-check", "reject"]
Pagination = Literal["none", "next-link", "cursor", "page"]
SourceAuthMode = Literal["none", "oauth2-client-credentials", "entra"]
TriggerSource = Literal["LogsAndContainerScan", "EventGrid"]


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable. `default` is what an unset or empty variable means."""

    name: str
    default: T
    meaning: str
    shown_default: str | None = None  # how the README shows the default, where its value says too little

    def read(self, env: Mapping[str, str], name: str | None = None) -> T:
        name = name or self.name
        raw = (env.get(name) or "").strip()
        if not raw:
            return self.default
        return self.parse(raw, name)

    def parse(self, raw: str, name: str) -> T:
        return cast(T, raw)

    @property
    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None:
            return "—"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return f"`{self.default}`" if self.default != "" else "empty"


@dataclass(frozen=True)
class Text(Setting[str]):
    pass


@dataclass(frozen=True)
class OptionalText(Setting[str | None]):
    pass


@dataclass(frozen=True)
class HeaderText(Text):
    """Text that goes into an HTTP header as it is: printable ASCII, at most 256 characters."""

    def parse(self, raw: str, name: str) -> str:
        if not re.fullmatch(r"[\x20-\x7e]{1,256}", raw):
            raise SettingsError(f"{name} must be at most 256 printable ASCII characters (it goes into a header)")
        return raw


@dataclass(frozen=True)
class ProxyText(Text):
    """A proxy variable: its lower-case form first, as curl and urllib read them."""

    def read(self, env: Mapping[str, str], name: str | None = None) -> str:
        name = name or self.name
        return (env.get(name.lower()) or "").strip() or super().read(env, name)


@dataclass(frozen=True)
class Flag(Setting[bool]):
    def parse(self, raw: str, name: str) -> bool:
        value = raw.lower()
        if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise SettingsError(f"{name} must be true or false, got {raw[:40]!r}")
        return value in ("true", "1", "yes", "on")


@dataclass(frozen=True)
class Number(Setting[T]):
    low: float = 0
    high: float = 0
    whole: bool = True

    def parse(self, raw: str, name: str) -> T:
        value: float | None
        try:  # a length cap first: int() of a 5,000-digit string is slow, and no bound needs it
            value = (int(raw) if self.whole else float(raw)) if len(raw) <= 24 else None
        except ValueError:
            value = None
        if value is None or value != value or value in (float("inf"), float("-inf")):
            kind = "a whole number" if self.whole else "a number"
            raise SettingsError(f"{name} must be {kind}, got {raw[:40]!r}")
        if not self.low <= value <= self.high:
            raise SettingsError(f"{name} must be between {_number(self.low)} and {_number(self.high)}, got {value}")
        return cast(T, value)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


@dataclass(frozen=True)
class Choice(Setting[T]):
    choices: tuple[str, ...] = ()

    def parse(self, raw: str, name: str) -> T:
        if raw not in self.choices:
            raise SettingsError(f"{name} must be one of {', '.join(self.choices)}, got {raw[:40]!r}")
        return cast(T, raw)


_STORAGE_NAME = re.compile(r"(?=[a-z0-9-]{3,63}\Z)[a-z0-9]+(?:-[a-z0-9]+)*")


def _storage_name(value: str, where: str, kind: str) -> str:
    """`value` if Azure allows it as a queue or container name: 3-63 of a-z, 0-9 and single inner hyphens."""
    if not _STORAGE_NAME.fullmatch(value):
        raise SettingsError(
            f"{where} must be a {kind} name Azure allows: 3 to 63 lowercase letters, digits and hyphens, starting "
            f"and ending with a letter or digit, no two hyphens in a row; got {value[:80]!r}"
        )
    return value


@dataclass(frozen=True)
class StorageName(Setting[str]):
    """A queue's or a blob container's name (`kind`), refused unless Azure allows it."""

    kind: str = "queue"

    def parse(self, raw: str, name: str) -> str:
        return _storage_name(raw, name, self.kind)


def _int(name: str, default: int, low: int, high: int, meaning: str, shown_default: str | None = None) -> Number[int]:
    return Number(name, default, meaning, shown_default, low=low, high=high)


def _float(name: str, default: float, low: float, high: float, meaning: str) -> Number[float]:
    return Number(name, default, meaning, low=low, high=high, whole=False)


# --- the settings, grouped below (GROUPS) -------------------------------------------------------------

STORAGE = Text("AzureWebJobsStorage", "UseDevelopmentStorage=true", "storage connection string (Azurite locally)")
STORAGE_BLOB_URI = OptionalText(
    "AzureWebJobsStorage__blobServiceUri", None,
    "identity-based storage in Azure (used when `AzureWebJobsStorage` is not set): the blob endpoint; "
    "`DefaultAzureCredential`, with the user-assigned identity `AzureWebJobsStorage__clientId`",
)  # fmt: skip
STORAGE_QUEUE_URI = OptionalText(
    "AzureWebJobsStorage__queueServiceUri", None, "identity-based storage: the queue endpoint"
)
STORAGE_CLIENT_ID = OptionalText(
    "AzureWebJobsStorage__clientId", None, "identity-based storage: the user-assigned identity's client id"
)
SOURCE_URL = OptionalText(
    "SOURCE_URL", None,
    "the default source: answers a JSON array of IDs (strings) or of objects. Required in Azure (with "
    "identity-based storage); locally it defaults to the demo API",
    shown_default=f"`http://127.0.0.1:{DEMO_API_PORT}/ids` (locally only)",
)  # fmt: skip
SOURCE_HEADERS = OptionalText(
    "SOURCE_HEADERS", None, 'JSON object of request headers for the source, e.g. `{"x-api-key": "…"}`'
)
SOURCE_PAGINATION = Choice[Pagination](
    "SOURCE_PAGINATION", "none", "`none`, `next-link`, `cursor` or `page`: see [Sources](sources.md)",
    choices=("none", "next-link", "cursor", "page"),
)  # fmt: skip
SOURCE_ITEMS_PATH = Text(
    "SOURCE_ITEMS_PATH", "", "where the items are: empty = the body is the array; `data`, `items`, `data[].id`"
)
SOURCE_NEXT_PATH = Text(
    "SOURCE_NEXT_PATH", "",
    "`next-link`: where the next link is (`links.next`); empty = the `Link: <…>; rel=\"next\"` header",
)  # fmt: skip
SOURCE_CURSOR_PATH = Text(
    "SOURCE_CURSOR_PATH", "next_cursor", "`cursor`: where the cursor is (null or missing = last page)"
)
SOURCE_CURSOR_PARAM = Text("SOURCE_CURSOR_PARAM", "cursor", "`cursor`: the query parameter the cursor goes back in")
SOURCE_PAGE_PARAM = Text("SOURCE_PAGE_PARAM", "page", "`page`: the page number's query parameter")
SOURCE_PAGE_SIZE_PARAM = Text("SOURCE_PAGE_SIZE_PARAM", "per_page", "`page`: the page size's query parameter")
SOURCE_PAGE_SIZE = _int("SOURCE_PAGE_SIZE", 1000, 1, 1_000_000, "`page`: items asked for per page")
SOURCE_FIRST_PAGE = _int(
    "SOURCE_FIRST_PAGE", 1, 0, 1_000_000, "`page`: the first page's number; stops at an empty page"
)
SOURCE_AUTH = Choice[SourceAuthMode](
    "SOURCE_AUTH", "none",
    "how the app signs in to the source: `none` (only `SOURCE_HEADERS`), `oauth2-client-credentials` (a token "
    "from `SOURCE_TOKEN_URL`) or `entra` (the app's managed identity, a token for `SOURCE_SCOPE`); a bearer token, "
    "renewed before it expires and once after a 401: see [Authentication](sources.md#authentication)",
    choices=("none", "oauth2-client-credentials", "entra"),
)  # fmt: skip
SOURCE_TOKEN_URL = OptionalText(
    "SOURCE_TOKEN_URL", None, "`oauth2-client-credentials`: the token endpoint (http or https), required"
)
SOURCE_CLIENT_ID = OptionalText(
    "SOURCE_CLIENT_ID", None,
    "`oauth2-client-credentials`: the client id, required; `entra`: the user-assigned identity to sign in as "
    "(empty = `AzureWebJobsStorage__clientId`)",
)  # fmt: skip
SOURCE_CLIENT_SECRET = OptionalText(
    "SOURCE_CLIENT_SECRET", None,
    "`oauth2-client-credentials`: the client secret, required (in Azure a Key Vault reference); never shown",
)  # fmt: skip
SOURCE_SCOPE = OptionalText(
    "SOURCE_SCOPE", None,
    "the scope asked for: `entra`, required (`api://<app id>/.default`); `oauth2-client-credentials`, sent when set",
)  # fmt: skip
SOURCE_TIMEOUT = _float("SOURCE_TIMEOUT", 60.0, 0.1, 3600.0, "seconds for connecting to and reading from the source")
SOURCE_MAX_ATTEMPTS = _int(
    "SOURCE_MAX_ATTEMPTS", 8, 1, 100,
    "calls to the source before the run fails (connect errors, timeouts, bodies cut short, 408, 429, 5xx are "
    "retried; with the default backoff 8 calls span about 30-60 s); a failed run resumes with a redrive",
)  # fmt: skip
SOURCE_RETRY_BASE_DELAY = _float(
    "SOURCE_RETRY_BASE_DELAY", 0.5, 0.0, 60.0, "seconds of the first backoff step (exponential, with jitter)"
)
SOURCE_RETRY_MAX_DELAY = _float(
    "SOURCE_RETRY_MAX_DELAY", 30.0, 0.0, 600.0, "the longest backoff; a `Retry-After` from the source wins up to this"
)
SOURCE_READ_DEADLINE = _float(
    "SOURCE_READ_DEADLINE", 300.0, 1.0, 86_400.0,
    "seconds one answer may take from request to last byte (a page, or the whole unpaged array): a source that "
    "trickles fails the run",
)  # fmt: skip
SOURCE_MAX_PAGES = _int(
    "SOURCE_MAX_PAGES", 1_000_000, 1, 10**9,
    "pages a run may read (across continuations); a source with more fails the run, as does one that answers a "
    "position or a page it answered before",
)  # fmt: skip
SOURCE_MAX_ITEMS = _int("SOURCE_MAX_ITEMS", 100_000_000, 1, 10**12, "items a run may take; more fails the run")
SOURCE_MAX_READS_PER_ITEM = _float(
    "SOURCE_MAX_READS_PER_ITEM", 2.0, 1.0, 1000.0,
    "items a paged run may read for each distinct item it found (estimated), plus 100: a source answering what it "
    "answered before, in any order or period, fails the run",
)  # fmt: skip
SOURCE_MAX_EMPTY_PAGES = _int(
    "SOURCE_MAX_EMPTY_PAGES", 1000, 1, 1_000_000,
    "empty pages in a row a `cursor` or `next-link` run follows (an empty page that names a next one is not the end); "
    "more fails the run",
)  # fmt: skip
SOURCE_MAX_DEPTH = _int(
    "SOURCE_MAX_DEPTH", 64, 2, 512, "how deeply an answer may nest arrays and objects; deeper fails the run"
)
SOURCE_MAX_PAGE_BYTES = _int(
    "SOURCE_MAX_PAGE_BYTES", 16 << 20, 1024, 1 << 30,
    "bytes one page may take, decompressed (pages are read as they stream); a bigger page fails the run",
    shown_default="`16777216` (16 MiB)",
)  # fmt: skip
SOURCE_MAX_ERROR_BYTES = _int(
    "SOURCE_MAX_ERROR_BYTES", 4096, 256, 1 << 20,
    "bytes of an error answer read for the run's failure reason (which keeps 300 characters); the rest is not read",
)  # fmt: skip
CHUNKING_TIME_BUDGET = _float(
    "CHUNKING_TIME_BUDGET", 60.0, 0.0, 200.0,
    "seconds an HTTP or queue invocation chunks a paged source before it hands the rest on, mid-page if need be "
    "(HTTP functions must answer within 230 s: an HTTP call reads at most 200 s, an unpaged source too)",
)  # fmt: skip
CHUNKING_TIME_LIMIT = _float(
    "CHUNKING_TIME_LIMIT", 480.0, 1.0, 3600.0,
    "seconds a `continue_chunking` invocation may read without having written a chunk (past the budget it goes on "
    "until it has); a run that cannot write one in this time fails. Keep it below the function timeout "
    "(`host.json`: 10 min)",
)  # fmt: skip
CONTROL_QUEUE = StorageName(
    "CONTROL_QUEUE", "chunking-continuations", "where continuations wait; `continue_chunking` reads it"
)
CHUNK_SIZE = _int(
    "CHUNK_SIZE", 5000, 1, MAX_CHUNK_SIZE,
    f"IDs per chunk blob (1..{MAX_CHUNK_SIZE}); a batched run's default is this many messages' worth, "
    f"`CHUNK_SIZE` x `batch_max_items` IDs, at most {MAX_CHUNK_SIZE}",
)  # fmt: skip
CHUNK_MAX_BYTES = _int(
    "CHUNK_MAX_BYTES", 8 << 20, 1024, 256 << 20,
    "bytes a chunk blob may hold: a chunk closes early before the item that would pass this; a bigger item fails "
    "the run. A run keeps the value it started with, so that its chunks are cut one way to its end",
    shown_default="`8388608` (8 MiB)",
)  # fmt: skip
CHUNK_CONTAINER = StorageName(
    "CHUNK_CONTAINER", "chunks", "where chunk blobs go; the blob trigger watches it", kind="container"
)
RUNS_CONTAINER = StorageName("RUNS_CONTAINER", "ingestion-runs", "run records and chunk statuses", kind="container")
CHUNK_UPLOAD_CONCURRENCY = _int(
    "CHUNK_UPLOAD_CONCURRENCY", 8, 1, 64, "chunk uploads in flight while the source still streams"
)
QUEUE_NAME = StorageName("QUEUE_NAME", "ingest", "the target queue (created if missing)")
QUEUE_PARTITIONS = _int(
    "QUEUE_PARTITIONS", 1, 1, 100, "spread messages over `QUEUE_NAME-0` … `-{N-1}` by a stable hash of the message"
)
QUEUE_MESSAGE_ENCODING = Choice[MessageEncoding](
    "QUEUE_MESSAGE_ENCODING", "base64", "`base64`, which Functions queue triggers expect, or `none` (plain text)",
    choices=MESSAGE_ENCODINGS,
)  # fmt: skip
QUEUE_MESSAGE_TTL = Number[int | None](
    "QUEUE_MESSAGE_TTL", None, "message time-to-live in seconds; `-1` = never expires",
    "service default (7 days)", low=-1, high=2**31 - 1,
)  # fmt: skip
QUEUE_MESSAGE_VISIBILITY_TIMEOUT = _int(
    "QUEUE_MESSAGE_VISIBILITY_TIMEOUT", 0, 0, 7 * 24 * 3600,
    "seconds a new message stays invisible to consumers (0 to 7 days, less than the TTL)",
)  # fmt: skip
INGEST_CONCURRENCY = _int("INGEST_CONCURRENCY", 64, 1, 1024, "Put Message calls in flight per chunk (a sliding window)")
INGEST_CHECKPOINT_EVERY = _int(
    "INGEST_CHECKPOINT_EVERY", 1000, 1, MAX_CHUNK_SIZE, "messages between checkpoints of a chunk's progress"
)
INGEST_LEASE_SECONDS = _float(
    "INGEST_LEASE_SECONDS", 60.0, 1.0, 3600.0,
    "how long a chunk's claim lasts without a checkpoint before another invocation may take over",
)  # fmt: skip
LARGE_MESSAGE_MODE = Choice[LargeMessageMode](
    "LARGE_MESSAGE_MODE", "claim-check",
    "a message over 64 KiB after encoding: `claim-check` stores it in a blob and enqueues "
    '`{"claim_check": {"container", "blob", "bytes"}}`; `reject` fails the chunk',
    choices=("claim-check", "reject"),
)  # fmt: skip
LARGE_MESSAGE_CONTAINER = StorageName(
    "LARGE_MESSAGE_CONTAINER", "large-messages", "where claim-checked payloads go", kind="container"
)
STORAGE_MAX_RETRIES = _int(
    "STORAGE_MAX_RETRIES", 5, 0, 20,
    "retries after a storage call fails with 408 or a 5xx (\"server busy\"; the SDK not on 501/505, the Put "
    "Message sender on 500/502/503/504), a timeout or a broken connection: "
    "[Storage answers](reliability.md#storage-answers)",
)  # fmt: skip
STORAGE_RETRY_BACKOFF = _float("STORAGE_RETRY_BACKOFF", 1.0, 0.0, 60.0, "seconds of the first storage backoff step")
STORAGE_RETRY_MAX_DELAY = _float(
    "STORAGE_RETRY_MAX_DELAY", 30.0, 0.0, 600.0,
    "the longest wait between two Put Message attempts, in seconds (the SDK's own policy doubles without a cap)",
)  # fmt: skip
STORAGE_TIMEOUT = _float("STORAGE_TIMEOUT", 30.0, 1.0, 600.0, "seconds a storage request may take")
SAS_LIFETIME = _int(
    "SAS_LIFETIME", 7200, 300, 7 * 86_400,
    "seconds an add-only queue SAS lasts that the Put Message sender signs with an account key (renewed before it "
    "ends, and once after a 401 or 403); keep it within a storage account's SAS expiration policy",
)  # fmt: skip
AZURE_HTTP_USER_AGENT = HeaderText(
    "AZURE_HTTP_USER_AGENT", "",
    "appended to the User-Agent of every storage request, the Put Message sender's too (the Azure SDK's convention)",
)  # fmt: skip
STORAGE_SPARE_CONNECTIONS = _int(
    "STORAGE_SPARE_CONNECTIONS", 4, 0, 64,
    "connections a storage pool keeps beyond the sends (`INGEST_CONCURRENCY`) or uploads in flight, for the claim, "
    "status and checkpoint writes made beside them",
)  # fmt: skip
BLOB_TRIGGER_SOURCE = Choice[TriggerSource](
    "BLOB_TRIGGER_SOURCE", "LogsAndContainerScan",
    "`LogsAndContainerScan` (polling; works on Azurite) or `EventGrid` (required on Flex Consumption)",
    choices=("LogsAndContainerScan", "EventGrid"),
)  # fmt: skip
HTTPS_PROXY = ProxyText(
    "HTTPS_PROXY", "",
    "the proxy every https call goes through (storage, the Put Message sender in a CONNECT tunnel, the source): "
    "`http://[user:password@]host[:port]`; the credentials go only into `Proxy-Authorization`. `https_proxy` wins "
    "where both are set. Read once at start-up",
)  # fmt: skip
HTTP_PROXY = ProxyText(
    "HTTP_PROXY", "",
    "the same for http calls (the request sent to the proxy in absolute form); `http_proxy` wins where both are set",
)  # fmt: skip
NO_PROXY = ProxyText(
    "NO_PROXY", "",
    "hosts reached directly, comma-separated: `*`, host names (each covers its subdomains; `.name` and `*.name` "
    "the same), IP addresses or CIDR blocks (`10.0.0.0/8`, `fd00::/8`), each with an optional `:port`; `no_proxy` "
    "wins where both are set. In Azure name the managed identity endpoint's host here if the proxy cannot reach it",
)  # fmt: skip
SSL_CERT_FILE = OptionalText(
    "SSL_CERT_FILE", None,
    "a PEM file of CA certificates trusted instead of the system store, by storage, the Put Message sender and the "
    "source alike; unset, all three trust the system store (on Linux OpenSSL's, where `update-ca-certificates` puts "
    "a corporate root CA). Never set it empty: OpenSSL then trusts nothing from a file",
    shown_default="— (the system store)",
)  # fmt: skip
HTTP_MAX_BODY_BYTES = _int(
    "HTTP_MAX_BODY_BYTES", 65_536, 1_024, 100 * 1024 * 1024,
    "the largest `POST /api/ingestions` body accepted, in bytes; a larger one answers `413`",
)  # fmt: skip
HTTP_RETRY_AFTER = _int(
    "HTTP_RETRY_AFTER", 5, 1, 3600,
    "the `Retry-After` (seconds) of an answer about a run in progress whose end is not yet in sight; once it has "
    "an ETA, a tenth of it, 2-30 s",
)  # fmt: skip
REDRIVE_QUEUE = StorageName(
    "REDRIVE_QUEUE", "chunk-redrives", "where chunk redrives wait, one message a chunk; `redrive_chunk` reads it"
)
EVENT_GRID_DEADLETTER_CONTAINER = StorageName(
    "EVENT_GRID_DEADLETTER_CONTAINER", "eventgrid-deadletter",
    "where Event Grid dead-letters the chunk events it could not deliver; the sweeper redrives their chunks and "
    "deletes what it has handled",
    kind="container",
)  # fmt: skip
SWEEP_SCHEDULE = Text(
    "SWEEP_SCHEDULE", "0 */5 * * * *",
    "NCRONTAB schedule (`second minute hour day month weekday`) of the `sweep_stalled_chunks` timer",
)  # fmt: skip
SWEEP_MAX_REDRIVES = _int(
    "SWEEP_MAX_REDRIVES", 100, 1, 10_000,
    "chunks one sweep redrives at most (dead-lettered events included); the rest wait for the next sweep",
)  # fmt: skip
SWEEP_TIME_BUDGET = _float(
    "SWEEP_TIME_BUDGET", 120.0, 1.0, 540.0,
    "seconds a sweep looks at runs (in a random order) before it stops; the next sweep looks at others first. "
    "A webhook delivery a sweep makes is cut off at its end too. Keep it well under the function timeout "
    "(`host.json`: 10 min)",
)  # fmt: skip
SWEEP_GIVE_UP_AFTER = _int(
    "SWEEP_GIVE_UP_AFTER", 5, 1, 1000,
    "redrives by the sweeper of one chunk, or continuations of one run's chunking, that move nothing before the "
    "sweeper marks it failed with the reason (a redrive by hand resumes it)",
)  # fmt: skip
SWEEP_STALE_SECONDS = _float(
    "SWEEP_STALE_SECONDS", 600.0, 1.0, 7 * 86_400.0,
    "a chunk blob without a status this long after it was written, or one whose lease ran out and that has not "
    "moved for this long, is redriven by the sweeper; so is a settled run's completion event whose sender died",
)  # fmt: skip
RUN_MAX_CONCURRENCY = _int(
    "RUN_MAX_CONCURRENCY", 0, 0, 1000,
    "the default `max_concurrency` of a run: chunk invocations ingesting one run at once; 0 = no cap",
)  # fmt: skip
THROTTLE_RETRY_SECONDS = _int(
    "THROTTLE_RETRY_SECONDS", 15, 1, 3600,
    "a chunk that finds every `max_concurrency` slot of its run taken goes back on `REDRIVE_QUEUE`, hidden this "
    "many seconds",
)  # fmt: skip
APPLICATIONINSIGHTS_CONNECTION_STRING = OptionalText(
    "APPLICATIONINSIGHTS_CONNECTION_STRING", None,
    "Application Insights: OpenTelemetry logs and per-chunk metrics go there; unset (locally) telemetry stays off",
)  # fmt: skip
AZURE_SDK_LOG_LEVEL = Choice[str](
    "AZURE_SDK_LOG_LEVEL", "WARNING",
    "the level of the Azure SDK's and httpx's loggers: `INFO` logs every storage and source request (8-10 lines "
    "an invocation, each an Application Insights trace); `WARNING` only what went wrong",
    choices=("DEBUG", "INFO", "WARNING", "ERROR"),
)  # fmt: skip
TOLERATED_FAILED_CHUNKS = _int(
    "TOLERATED_FAILED_CHUNKS", 0, 0, 10**6,
    "failed chunks a run tolerates when its request sets no `max_failed_chunks`: one more makes the run `failed` "
    "at once (its other chunks stop at their next checkpoint); within it the run ends `completed`, the failed "
    "chunks listed",
)  # fmt: skip
TOLERATED_FAILED_PERCENT = _int(
    "TOLERATED_FAILED_PERCENT", 0, 0, 100,
    "failed chunks a run tolerates, in percent of its chunks, when its request sets no `max_failed_percent` "
    "(judged once the chunk count is known); 0 = no percentage threshold. With `max_failed_chunks`, whichever "
    "is passed first fails the run; both 0: none tolerated",
)  # fmt: skip
MESSAGE_BATCH_MAX_ITEMS = _int(
    "MESSAGE_BATCH_MAX_ITEMS", 1, 1, 5000,
    "the default `batch_max_items` of a run: items a queue message carries; 1 = one ID a message, as sent "
    "without batching; more = a JSON object `{\"items\": [...]}` a message",
)  # fmt: skip
MESSAGE_ENVELOPE = Flag(
    "MESSAGE_ENVELOPE", False,
    "the default `envelope` of a run: each message a JSON object with `run_id` and `seq` (the item's position "
    "in the source), the same on every redelivery, resume and redrive",
)  # fmt: skip
QUEUE_MAX_BACKLOG = _int(
    "QUEUE_MAX_BACKLOG", 0, 0, 10**9,
    "the default `max_backlog` of a run: while a target queue holds more messages than this, its chunks wait "
    "at their next checkpoint for the consumer; 0 = off",
)  # fmt: skip
BACKLOG_RETRY_SECONDS = _int(
    "BACKLOG_RETRY_SECONDS", 30, 1, 3600,
    "a chunk waiting on its run's `max_backlog` goes back on `REDRIVE_QUEUE`, hidden this many seconds, and "
    "looks at the queue again then (`fanout run` waits in-process as long)",
)  # fmt: skip
RUN_EVENTS_QUEUE = StorageName(
    "RUN_EVENTS_QUEUE", "ingestion-events",
    "where one event per run lands (base64 JSON) when it ends `completed`, `failed` or `cancelled`",
)  # fmt: skip
RUN_EVENTS_WEBHOOK = OptionalText(
    "RUN_EVENTS_WEBHOOK", None,
    "a URL that also receives each run's completion event, as a CloudEvents 1.0 structured JSON `POST` (an Event "
    "Grid topic's endpoint works as it is); its query values (`code=`) are secrets, never shown. Unset: off",
)  # fmt: skip
RUN_EVENTS_WEBHOOK_AUDIENCE = OptionalText(
    "RUN_EVENTS_WEBHOOK_AUDIENCE", None,
    "with it, each `POST` carries an Entra token for this audience from the app's identity (`DefaultAzureCredential`, "
    "`AzureWebJobsStorage__clientId`): `https://eventgrid.azure.net` for an Event Grid topic",
)  # fmt: skip
RUN_EVENTS_WEBHOOK_TIMEOUT = _float(
    "RUN_EVENTS_WEBHOOK_TIMEOUT", 10.0, 0.05, 120.0,
    "seconds one `POST` to the webhook may take, answer included: a webhook that hangs counts as failed",
)  # fmt: skip
RUN_EVENTS_WEBHOOK_ATTEMPTS = _int(
    "RUN_EVENTS_WEBHOOK_ATTEMPTS", 3, 1, 20,
    "`POST`s of one delivery (backoff between them) after a timeout, a broken connection, 408, 429 or 5xx. A delivery "
    "is cut off after this many times `RUN_EVENTS_WEBHOOK_TIMEOUT`, plus the longest backoff (8 times the retry delay) "
    "between each two and 30 s",
)  # fmt: skip
RUN_EVENTS_WEBHOOK_RETRY_DELAY = _float(
    "RUN_EVENTS_WEBHOOK_RETRY_DELAY", 1.0, 0.0, 60.0, "seconds of the first backoff step between `POST`s"
)
RUN_EVENTS_WEBHOOK_DELIVERIES = _int(
    "RUN_EVENTS_WEBHOOK_DELIVERIES", 10, 1, 1000,
    "deliveries of one event before it is recorded `undelivered` on the run: the first when the run ends, then one "
    "a sweep while none is under way (one under way past its cut-off, plus 5 s, lost its deliverer and counts); a "
    "redirect or a 4xx other than 408 and 429 records it `undelivered` at once",
)  # fmt: skip
WEBSITE_HOSTNAME = OptionalText(
    "WEBSITE_HOSTNAME", None,
    "set by Azure: the app's host name, the `source` of its CloudEvents (`https://<host>`); unset, `urn:fanout`",
)  # fmt: skip
QUEUE_ACCOUNTS = Text(
    "QUEUE_ACCOUNTS", "",
    "storage accounts the target queues are spread over, comma-separated, each holding every `QUEUE_NAME` "
    "partition: queue service URIs (identity: `DefaultAzureCredential` with `AzureWebJobsStorage__clientId`) or "
    "names of connection settings (a connection string, or `<NAME>__queueServiceUri` for identity). A message goes "
    "to one of (accounts times `QUEUE_PARTITIONS`) queues by a stable hash. Empty = `AzureWebJobsStorage` only",
    shown_default="empty (`AzureWebJobsStorage`)",
)  # fmt: skip

# The table, by group, in the order docs/settings.md shows it: every setting is named here, once (a test
# fails for a module-level Setting that is not).
GROUPS: tuple[tuple[str, tuple[Setting[Any], ...]], ...] = (
    ("storage", (
        STORAGE, STORAGE_BLOB_URI, STORAGE_QUEUE_URI, STORAGE_CLIENT_ID, STORAGE_MAX_RETRIES, STORAGE_RETRY_BACKOFF,
        STORAGE_RETRY_MAX_DELAY, STORAGE_TIMEOUT, STORAGE_SPARE_CONNECTIONS, SAS_LIFETIME,
        AZURE_HTTP_USER_AGENT,
    )),
    ("network", (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, SSL_CERT_FILE)),
    ("source", (
        SOURCE_URL, SOURCE_HEADERS, SOURCE_PAGINATION, SOURCE_ITEMS_PATH, SOURCE_NEXT_PATH, SOURCE_CURSOR_PATH,
        SOURCE_CURSOR_PARAM, SOURCE_PAGE_PARAM, SOURCE_PAGE_SIZE_PARAM, SOURCE_PAGE_SIZE, SOURCE_FIRST_PAGE,
        SOURCE_AUTH, SOURCE_TOKEN_URL, SOURCE_CLIENT_ID, SOURCE_CLIENT_SECRET, SOURCE_SCOPE, SOURCE_TIMEOUT,
        SOURCE_MAX_ATTEMPTS, SOURCE_RETRY_BASE_DELAY, SOURCE_RETRY_MAX_DELAY, SOURCE_READ_DEADLINE, SOURCE_MAX_PAGES,
        SOURCE_MAX_ITEMS, SOURCE_MAX_READS_PER_ITEM, SOURCE_MAX_EMPTY_PAGES, SOURCE_MAX_DEPTH, SOURCE_MAX_PAGE_BYTES,
        SOURCE_MAX_ERROR_BYTES,
    )),
    ("chunking", (
        CHUNK_SIZE, CHUNK_MAX_BYTES, CHUNK_CONTAINER, CHUNK_UPLOAD_CONCURRENCY, CHUNKING_TIME_BUDGET,
        CHUNKING_TIME_LIMIT, CONTROL_QUEUE,
    )),
    ("ingestion", (
        INGEST_CONCURRENCY, INGEST_CHECKPOINT_EVERY, INGEST_LEASE_SECONDS, BLOB_TRIGGER_SOURCE, LARGE_MESSAGE_MODE,
        LARGE_MESSAGE_CONTAINER,
    )),
    ("queues", (
        QUEUE_NAME, QUEUE_PARTITIONS, QUEUE_ACCOUNTS, QUEUE_MESSAGE_ENCODING, QUEUE_MESSAGE_TTL,
        QUEUE_MESSAGE_VISIBILITY_TIMEOUT,
    )),
    ("delivery", (MESSAGE_BATCH_MAX_ITEMS, MESSAGE_ENVELOPE, QUEUE_MAX_BACKLOG, BACKLOG_RETRY_SECONDS)),
    ("runs", (
        RUNS_CONTAINER, RUN_MAX_CONCURRENCY, THROTTLE_RETRY_SECONDS, TOLERATED_FAILED_CHUNKS,
        TOLERATED_FAILED_PERCENT, RUN_EVENTS_QUEUE,
        RUN_EVENTS_WEBHOOK, RUN_EVENTS_WEBHOOK_AUDIENCE, RUN_EVENTS_WEBHOOK_TIMEOUT, RUN_EVENTS_WEBHOOK_ATTEMPTS,
        RUN_EVENTS_WEBHOOK_RETRY_DELAY, RUN_EVENTS_WEBHOOK_DELIVERIES, WEBSITE_HOSTNAME,
        REDRIVE_QUEUE, EVENT_GRID_DEADLETTER_CONTAINER, SWEEP_SCHEDULE, SWEEP_MAX_REDRIVES, SWEEP_STALE_SECONDS,
        SWEEP_TIME_BUDGET, SWEEP_GIVE_UP_AFTER, HTTP_MAX_BODY_BYTES, HTTP_RETRY_AFTER,
    )),
    ("telemetry", (APPLICATIONINSIGHTS_CONNECTION_STRING, AZURE_SDK_LOG_LEVEL)),
)  # fmt: skip
TABLE: tuple[Setting[Any], ...] = tuple(setting for _, settings in GROUPS for setting in settings)
# A named source repeats the source settings under its own prefix: SOURCE_<NAME>__<KEY>.
SOURCE_SETTINGS: tuple[Setting[Any], ...] = (
    SOURCE_URL, SOURCE_HEADERS, SOURCE_PAGINATION, SOURCE_ITEMS_PATH, SOURCE_NEXT_PATH, SOURCE_CURSOR_PATH,
    SOURCE_CURSOR_PARAM, SOURCE_PAGE_PARAM, SOURCE_PAGE_SIZE_PARAM, SOURCE_PAGE_SIZE, SOURCE_FIRST_PAGE,
    SOURCE_AUTH, SOURCE_TOKEN_URL, SOURCE_CLIENT_ID, SOURCE_CLIENT_SECRET, SOURCE_SCOPE,
)  # fmt: skip
SOURCE_KEYS = tuple(setting.name.removeprefix("SOURCE_") for setting in SOURCE_SETTINGS)


# --- what the app reads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageConfig:
    """Where storage is and how to authenticate: a connection string or a managed identity."""

    connection_string: str | None
    blob_service_uri: str | None
    queue_service_uri: str | None
    client_id: str | None
    network: Network
    max_retries: int
    retry_backoff: float
    retry_max_delay: float
    timeout: float

    @property
    def in_azure(self) -> bool:
        """Identity-based storage: the app runs in Azure, where nothing may fall back to a local default."""
        return self.connection_string is None

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.max_retries + 1, base_delay=self.retry_backoff, max_delay=self.retry_max_delay)

    @property
    def secrets(self) -> list[str]:
        """The connection string's AccountKey and SharedAccessSignature, and the SAS's `sig` alone (the
        redactor, core/redact.py, finds every form of each)."""
        pairs = _connection_pairs(self.connection_string or "") or {}
        sas = pairs.get("SHAREDACCESSSIGNATURE", "")
        sigs = [value for key, _, value in (part.partition("=") for part in sas.lstrip("?").split("&")) if key == "sig"]
        return [value for value in (pairs.get("ACCOUNTKEY"), sas, *sigs) if value]


@dataclass(frozen=True)
class QueueAccount:
    """A storage account that holds target queues; `name` is what statuses call it (never a secret)."""

    name: str
    storage: StorageConfig


@dataclass(frozen=True)
class SourceLimits:
    """The most a run takes from a source; past any of these it fails, with a reason naming the setting."""

    read_deadline: float
    max_pages: int
    max_items: int
    max_reads_per_item: float
    max_empty_pages: int
    max_depth: int
    max_page_bytes: int
    max_error_bytes: int


@dataclass(frozen=True)
class SourceAuth:
    """How the app signs in to a source (SOURCE_AUTH): nothing, OAuth2 client credentials at `token_url`, or
    Entra ID as the app's identity (`client_id`: a user-assigned one). Hashable: a process keeps one token per
    sign-in (chunking/source_token.py). The secret never shows in a repr."""

    mode: SourceAuthMode = "none"
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scope: str | None = None


@dataclass(frozen=True)
class SourceConfig:
    """A source API: where its items are in a response, how to reach the next page, and how to sign in."""

    name: str
    url: str
    headers: Mapping[str, str]
    items_path: str
    pagination: Pagination
    next_path: str
    cursor_path: str
    cursor_param: str
    page_param: str
    page_size_param: str
    page_size: int
    first_page: int
    auth: SourceAuth = SourceAuth()

    @property
    def secrets(self) -> list[str]:
        """Every header value, the client secret, the URLs' user:password and password, and their query values
        but numbers of under SHORT_NUMBER_DIGITS digits (`count=10`: redacting those would blank ordinary counts;
        a numeric key is longer). The redactor (core/redact.py) finds what in each is a secret on its own (a
        `Bearer` token, a `Basic` password) and every form of it. The tokens the app is given are not settings:
        the token holder hands each to the redactor as it comes (chunking/source_token.py)."""
        values = [*self.headers.values(), *([self.auth.client_secret] if self.auth.client_secret else [])]
        for url in (self.url, self.auth.token_url or ""):
            query = parse_qsl(url.partition("?")[2].partition("#")[0])  # no urlsplit: it raises on `http://[::1`
            values += userinfo_secrets(url)
            values += [value for _, value in query if not (value.isdigit() and len(value) < SHORT_NUMBER_DIGITS)]
        return values

    def setting_name(self, setting: Setting[Any]) -> str:
        """What `setting` is called for this source: `SOURCE_CURSOR_PARAM`, or `SOURCE_CRM__CURSOR_PARAM`."""
        prefix = "SOURCE_" if self.name == DEFAULT_SOURCE else f"SOURCE_{self.name.upper()}__"
        return prefix + setting.name.removeprefix("SOURCE_")


@dataclass(frozen=True)
class WebhookConfig:
    """Where completion events go besides the queue, as CloudEvents (core/webhook.py); `url` None: nowhere."""

    url: str | None
    audience: str | None
    timeout: float
    retry: RetryPolicy
    deliveries: int
    source: str  # the CloudEvents `source`: the app
    client_id: str | None  # the user-assigned identity a token for `audience` comes from

    @property
    def delivery_seconds(self) -> float:
        """The longest one delivery may take, a token included: core/webhook.py cuts it off there. Every `POST`'s
        timeout, the longest backoff between each two, and WEBHOOK_SETUP_SECONDS for the token and the connection."""
        attempts = self.retry.attempts
        return attempts * self.timeout + (attempts - 1) * self.retry.max_delay + WEBHOOK_SETUP_SECONDS

    @property
    def secrets(self) -> list[str]:
        """The URL's user:password and its query values (an Event Grid or Functions `code=`, a SAS) but the
        `api-version` (a date an Event Grid URL names: redacting it would blank dates everywhere)."""
        url = self.url or ""
        query = parse_qsl(url.partition("?")[2].partition("#")[0])
        return [*userinfo_secrets(url), *(value for key, value in query if key.lower() != "api-version")]


def _webhook(env: Mapping[str, str]) -> WebhookConfig:
    url = RUN_EVENTS_WEBHOOK.read(env)
    if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
        raise SettingsError(f"{RUN_EVENTS_WEBHOOK.name} must be an http or https URL (the value is not shown)")
    host = WEBSITE_HOSTNAME.read(env)
    return WebhookConfig(
        url=url,
        audience=RUN_EVENTS_WEBHOOK_AUDIENCE.read(env),
        timeout=RUN_EVENTS_WEBHOOK_TIMEOUT.read(env),
        retry=RetryPolicy(
            attempts=RUN_EVENTS_WEBHOOK_ATTEMPTS.read(env), base_delay=RUN_EVENTS_WEBHOOK_RETRY_DELAY.read(env),
            max_delay=max(RUN_EVENTS_WEBHOOK_RETRY_DELAY.read(env) * 8, 0.0),
        ),
        deliveries=RUN_EVENTS_WEBHOOK_DELIVERIES.read(env),
        source=f"https://{host}" if host else "urn:fanout",
        client_id=STORAGE_CLIENT_ID.read(env),
    )  # fmt: skip


@dataclass(frozen=True)
class Settings:
    storage: StorageConfig
    sources: Mapping[str, SourceConfig]
    chunk_container: str
    runs_container: str
    chunk_size: int
    queue_name: str
    queue_partitions: int
    message_encoding: MessageEncoding
    message_ttl: int | None
    message_visibility_timeout: int
    ingest_concurrency: int
    checkpoint_every: int
    lease_seconds: float
    large_message_mode: LargeMessageMode
    large_message_container: str
    upload_concurrency: int
    source_timeout: float
    source_retry: RetryPolicy
    source_limits: SourceLimits
    chunking_time_budget: float
    chunking_time_limit: float
    chunk_max_bytes: int
    control_queue: str
    http_max_body_bytes: int
    redrive_queue: str
    deadletter_container: str
    sweep_max_redrives: int
    sweep_time_budget: float
    sweep_give_up_after: int
    http_retry_after: int
    spare_connections: int
    sas_lifetime: int
    user_agent: str
    sweep_stale_seconds: float
    run_max_concurrency: int
    throttle_retry_seconds: int
    tolerated_failed_chunks: int
    tolerated_failed_percent: int
    batch_max_items: int
    message_envelope: bool
    max_backlog: int
    backlog_retry_seconds: int
    run_events_queue: str
    webhook: WebhookConfig
    queue_accounts: tuple[QueueAccount, ...]
    sdk_log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        ttl = _ttl(env)
        storage = _storage_config(env)
        settings = cls(
            storage=storage,
            sources=_sources(env, storage),
            chunk_container=CHUNK_CONTAINER.read(env),
            runs_container=RUNS_CONTAINER.read(env),
            chunk_size=CHUNK_SIZE.read(env),
            queue_name=QUEUE_NAME.read(env),
            queue_partitions=QUEUE_PARTITIONS.read(env),
            message_encoding=QUEUE_MESSAGE_ENCODING.read(env),
            message_ttl=ttl,
            message_visibility_timeout=_visibility_timeout(env, ttl),
            ingest_concurrency=INGEST_CONCURRENCY.read(env),
            checkpoint_every=INGEST_CHECKPOINT_EVERY.read(env),
            lease_seconds=INGEST_LEASE_SECONDS.read(env),
            large_message_mode=LARGE_MESSAGE_MODE.read(env),
            large_message_container=LARGE_MESSAGE_CONTAINER.read(env),
            upload_concurrency=CHUNK_UPLOAD_CONCURRENCY.read(env),
            source_timeout=SOURCE_TIMEOUT.read(env),
            chunking_time_budget=CHUNKING_TIME_BUDGET.read(env),
            chunking_time_limit=CHUNKING_TIME_LIMIT.read(env),
            chunk_max_bytes=CHUNK_MAX_BYTES.read(env),
            control_queue=CONTROL_QUEUE.read(env),
            source_retry=RetryPolicy(
                attempts=SOURCE_MAX_ATTEMPTS.read(env),
                base_delay=SOURCE_RETRY_BASE_DELAY.read(env),
                max_delay=SOURCE_RETRY_MAX_DELAY.read(env),
            ),
            source_limits=SourceLimits(
                read_deadline=SOURCE_READ_DEADLINE.read(env),
                max_pages=SOURCE_MAX_PAGES.read(env),
                max_items=SOURCE_MAX_ITEMS.read(env),
                max_reads_per_item=SOURCE_MAX_READS_PER_ITEM.read(env),
                max_empty_pages=SOURCE_MAX_EMPTY_PAGES.read(env),
                max_depth=SOURCE_MAX_DEPTH.read(env),
                max_page_bytes=SOURCE_MAX_PAGE_BYTES.read(env),
                max_error_bytes=SOURCE_MAX_ERROR_BYTES.read(env),
            ),
            http_max_body_bytes=HTTP_MAX_BODY_BYTES.read(env),
            redrive_queue=REDRIVE_QUEUE.read(env),
            deadletter_container=EVENT_GRID_DEADLETTER_CONTAINER.read(env),
            sweep_max_redrives=SWEEP_MAX_REDRIVES.read(env),
            sweep_time_budget=SWEEP_TIME_BUDGET.read(env),
            sweep_give_up_after=SWEEP_GIVE_UP_AFTER.read(env),
            http_retry_after=HTTP_RETRY_AFTER.read(env),
            spare_connections=STORAGE_SPARE_CONNECTIONS.read(env),
            sas_lifetime=SAS_LIFETIME.read(env),
            user_agent=AZURE_HTTP_USER_AGENT.read(env),
            sweep_stale_seconds=SWEEP_STALE_SECONDS.read(env),
            run_max_concurrency=RUN_MAX_CONCURRENCY.read(env),
            throttle_retry_seconds=THROTTLE_RETRY_SECONDS.read(env),
            tolerated_failed_chunks=TOLERATED_FAILED_CHUNKS.read(env),
            tolerated_failed_percent=TOLERATED_FAILED_PERCENT.read(env),
            batch_max_items=MESSAGE_BATCH_MAX_ITEMS.read(env),
            message_envelope=MESSAGE_ENVELOPE.read(env),
            max_backlog=QUEUE_MAX_BACKLOG.read(env),
            backlog_retry_seconds=BACKLOG_RETRY_SECONDS.read(env),
            run_events_queue=RUN_EVENTS_QUEUE.read(env),
            webhook=_webhook(env),
            queue_accounts=_queue_accounts(env, storage),
            sdk_log_level=AZURE_SDK_LOG_LEVEL.read(env),
        )
        _check_storage_names(settings)
        return settings

    @property
    def put_pool_size(self) -> int:
        """Connections of one account's Put Message pool, and so the most sends a queue's pace allows."""
        return self.ingest_concurrency + self.spare_connections

    @property
    def sdk_pool_size(self) -> int:
        """Connections of the storage SDK's pool: the uploads or sends in flight, and the writes beside them."""
        return max(self.ingest_concurrency, self.upload_concurrency) + self.spare_connections

    @property
    def queue_names(self) -> list[str]:
        return partition_queue_names(self.queue_name, self.queue_partitions)

    @property
    def queue_targets(self) -> list[str]:
        """Every target queue as `account/queue`, in routing order (account by account)."""
        return [f"{account.name}/{queue}" for account in self.queue_accounts for queue in self.queue_names]

    @property
    def network(self) -> Network:
        """The proxies and trust store of the process (every storage account's config carries the same)."""
        return self.storage.network

    @property
    def secrets(self) -> list[str]:
        """Values that must never reach a status, a problem answer or a log: every source's (`SourceConfig.secrets`),
        the webhook's (`WebhookConfig.secrets`), every storage connection string's (`StorageConfig.secrets`) and the
        proxies' credentials, each once."""
        storages = [self.storage, *(account.storage for account in self.queue_accounts)]
        values = [value for source in self.sources.values() for value in source.secrets] + self.webhook.secrets
        values += [value for url in self.network.proxies.urls for value in userinfo_secrets(url)]
        return list(dict.fromkeys(values + [value for storage in storages for value in storage.secrets]))

    def source(self, name: str | None) -> SourceConfig:
        return self.sources[(name or DEFAULT_SOURCE).lower()]


def _storage_config(env: Mapping[str, str]) -> StorageConfig:
    common = {
        "network": _network(env),
        "max_retries": STORAGE_MAX_RETRIES.read(env),
        "retry_backoff": STORAGE_RETRY_BACKOFF.read(env),
        "retry_max_delay": STORAGE_RETRY_MAX_DELAY.read(env),
        "timeout": STORAGE_TIMEOUT.read(env),
    }
    blob_uri = STORAGE_BLOB_URI.read(env)
    if blob_uri and not env.get(STORAGE.name):
        queue_uri = STORAGE_QUEUE_URI.read(env)
        if not queue_uri:
            raise SettingsError(
                f"{STORAGE_BLOB_URI.name} is set but {STORAGE_QUEUE_URI.name} is not: set both for "
                "identity-based storage access."
            )
        return StorageConfig(
            None, blob_service_uri=blob_uri, queue_service_uri=queue_uri, client_id=STORAGE_CLIENT_ID.read(env),
            **common,  # type: ignore[arg-type]
        )  # fmt: skip
    connection = _connection_string(STORAGE.read(env), STORAGE.name, ("blob", "queue"))
    return StorageConfig(
        connection, blob_service_uri=None, queue_service_uri=None, client_id=None,
        **common,  # type: ignore[arg-type]
    )  # fmt: skip


def _network(env: Mapping[str, str]) -> Network:
    """The proxies and the trust store, checked at start-up: a CA file that cannot be loaded is named here."""
    https, http = HTTPS_PROXY.read(env), HTTP_PROXY.read(env)
    proxies = Proxies(
        http=proxy_of(http, HTTP_PROXY.name) if http else None,
        https=proxy_of(https, HTTPS_PROXY.name) if https else None,
        no_proxy=NO_PROXY.read(env),
    )
    network = Network(proxies, SSL_CERT_FILE.read(env))
    try:
        network.tls  # noqa: B018 (built once per process and file, here where a bad file is a settings error)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"{SSL_CERT_FILE.name} {network.ca_file!r} is no PEM file of CA certificates: {exc}"
        ) from None
    return network


def _connection_string(value: str, where: str, services: tuple[str, ...]) -> str:
    """`value` if the storage SDK can reach `services` with it and sign in; errors never show the value."""
    problem = _connection_problem(value, services)
    if problem:
        raise SettingsError(f"{where} is not a storage connection string: {problem} (the value is not shown)")
    return value


def _connection_problem(value: str, services: tuple[str, ...]) -> str | None:
    """Why `value` is no connection string for `services`, or None: it is `key=value` pairs separated by `;`,
    and either UseDevelopmentStorage=true or an account (AccountName, or each service's endpoint) with a
    credential (AccountKey in base64 with AccountName, SharedAccessSignature, or explicit endpoints)."""
    pairs = _connection_pairs(value)
    if pairs is None:
        return "it must be key=value pairs separated by ';'"
    if pairs.get("USEDEVELOPMENTSTORAGE") == "true":
        return None
    account, key = pairs.get("ACCOUNTNAME"), pairs.get("ACCOUNTKEY")
    if key and not account:
        return "AccountKey needs AccountName"
    if key and not _base64(key):
        return "AccountKey must be base64, as the portal shows the account's key"
    endpoints = [f"{service.title()}Endpoint" for service in services]
    for endpoint in endpoints:
        secondary = endpoint.replace("Endpoint", "SecondaryEndpoint")
        if secondary.upper() in pairs and endpoint.upper() not in pairs:
            return f"{secondary} needs {endpoint}"
    given = [bool(pairs.get(endpoint.upper())) for endpoint in endpoints]
    if not account and not all(given):
        return f"it must be UseDevelopmentStorage=true or name the account: AccountName, or {' and '.join(endpoints)}"
    if not (key or pairs.get("SHAREDACCESSSIGNATURE") or any(given)):
        return "AccountName needs AccountKey or SharedAccessSignature"
    return None


def _connection_pairs(connection: str) -> dict[str, str] | None:
    """`key=value` pairs as the storage SDK reads them (keys upper-cased, the last wins); None if one is not."""
    parts = [part.split("=", 1) for part in connection.rstrip(";").split(";")]
    if any(len(part) != 2 for part in parts):
        return None
    return {key.upper(): value for key, value in parts}


def _base64(text: str) -> bytes:
    """`text` decoded as standard, padded base64; empty if it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        return b""


def _check_storage_names(settings: Settings) -> None:
    """QUEUE_NAME's partition queues fit the name rule; no two settings name one queue, or one container."""
    where = f"{QUEUE_NAME.name}'s partition queue (with {QUEUE_PARTITIONS.name}={settings.queue_partitions})"
    for queue in settings.queue_names:
        _storage_name(queue, where, "queue")
    _distinct("queue", {
        QUEUE_NAME.name: settings.queue_names, CONTROL_QUEUE.name: [settings.control_queue],
        REDRIVE_QUEUE.name: [settings.redrive_queue], RUN_EVENTS_QUEUE.name: [settings.run_events_queue],
    })  # fmt: skip
    _distinct("container", {
        CHUNK_CONTAINER.name: [settings.chunk_container], RUNS_CONTAINER.name: [settings.runs_container],
        LARGE_MESSAGE_CONTAINER.name: [settings.large_message_container],
        EVENT_GRID_DEADLETTER_CONTAINER.name: [settings.deadletter_container],
    })  # fmt: skip


def _distinct(kind: str, names: Mapping[str, list[str]]) -> None:
    """No name in `names` (setting: the names it makes) is made by two settings."""
    owners: dict[str, str] = {}
    for setting, values in names.items():
        for value in values:
            if value in owners:
                raise SettingsError(
                    f"{owners[value]} and {setting} both name the {kind} {value!r}: give each its own {kind}"
                )
            owners[value] = setting


MAX_QUEUE_ACCOUNTS = 50
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _queue_accounts(env: Mapping[str, str], storage: StorageConfig) -> tuple[QueueAccount, ...]:
    """QUEUE_ACCOUNTS read: no entry twice, none empty. Errors name an entry's position or setting name,
    never a connection string."""
    raw = QUEUE_ACCOUNTS.read(env)
    entries = [entry.strip() for entry in raw.split(",")] if raw else [STORAGE.name]
    if len(entries) > MAX_QUEUE_ACCOUNTS:
        raise SettingsError(f"{QUEUE_ACCOUNTS.name} lists {len(entries)} accounts; at most {MAX_QUEUE_ACCOUNTS}")
    accounts = [_queue_account(env, entry, number, storage) for number, entry in enumerate(entries, start=1)]
    seen: dict[StorageConfig, str] = {}
    for account in accounts:
        if account.storage in seen:
            raise SettingsError(
                f"{QUEUE_ACCOUNTS.name} lists the same account twice ({seen[account.storage]} and {account.name})"
            )
        seen[account.storage] = account.name
    return tuple(accounts)


def _queue_account(env: Mapping[str, str], entry: str, number: int, storage: StorageConfig) -> QueueAccount:
    where = f"{QUEUE_ACCOUNTS.name}, entry {number}"
    if not entry:
        raise SettingsError(f"{where} is empty: list queue service URIs or setting names, separated by commas")
    if "://" in entry:
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query:
            raise SettingsError(
                f"{where} is not a queue service URI like https://<account>.queue.core.windows.net (http or https, "
                "no user, no query string: the app signs in with its identity, a SAS is not used)"
            )
        uri = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        return QueueAccount(uri, replace(storage, connection_string=None, blob_service_uri=None, queue_service_uri=uri))
    if entry == STORAGE.name:
        return QueueAccount(entry, storage)
    if not _SETTING_NAME.fullmatch(entry):
        raise SettingsError(f"{where} is neither a queue service URI nor a setting name (letters, digits, _)")
    connection = (env.get(entry) or "").strip()
    if connection:
        _connection_string(connection, f"{entry} (in {QUEUE_ACCOUNTS.name})", ("queue",))
        return QueueAccount(
            entry, replace(storage, connection_string=connection, blob_service_uri=None, queue_service_uri=None,
                           client_id=None),
        )  # fmt: skip
    uri = (env.get(f"{entry}__queueServiceUri") or "").strip()
    if not uri:
        raise SettingsError(
            f"{where} names {entry}, which is not set: set {entry} to a connection string, or "
            f"{entry}__queueServiceUri (and {entry}__clientId) for identity-based access"
        )
    client_id = (env.get(f"{entry}__clientId") or "").strip() or storage.client_id
    named = _queue_account(env, uri, number, replace(storage, client_id=client_id))
    return replace(named, name=entry)


def _sources(env: Mapping[str, str], storage: StorageConfig) -> dict[str, SourceConfig]:
    """The default source and every named one; `storage`'s identity is the one an `entra` source signs in as."""
    common = {"in_azure": storage.in_azure, "identity_client_id": storage.client_id}
    sources = {DEFAULT_SOURCE: _source(env, DEFAULT_SOURCE, "SOURCE_", **common)}  # type: ignore[arg-type]
    for key in env:
        match = _NAMED_SOURCE_URL.fullmatch(key)
        if match:
            name = match.group(1).lower()
            sources[name] = _source(env, name, f"SOURCE_{match.group(1)}__", **common)  # type: ignore[arg-type]
    return sources


def _source_auth(read: Callable[[Setting[Any]], Any], prefix: str, identity_client_id: str | None) -> SourceAuth:
    """SOURCE_AUTH and the settings its mode needs, each checked: a missing one, or one the mode does not use
    (a mistyped mode, a secret left behind), is named. Errors never show a value."""
    mode: SourceAuthMode = read(SOURCE_AUTH)
    given = {setting: read(setting) for setting in (SOURCE_TOKEN_URL, SOURCE_CLIENT_ID, SOURCE_CLIENT_SECRET,
                                                    SOURCE_SCOPE)}  # fmt: skip
    needs = {
        "none": (), "oauth2-client-credentials": (SOURCE_TOKEN_URL, SOURCE_CLIENT_ID, SOURCE_CLIENT_SECRET),
        "entra": (SOURCE_SCOPE,),
    }[mode]  # fmt: skip
    uses = {"none": (), "oauth2-client-credentials": tuple(given), "entra": (SOURCE_CLIENT_ID, SOURCE_SCOPE)}[mode]

    def named(setting: Setting[Any]) -> str:
        return prefix + setting.name.removeprefix("SOURCE_")

    for setting in needs:
        if given[setting] is None:
            raise SettingsError(f"{named(SOURCE_AUTH)}={mode} needs {named(setting)}: set it")
    for setting, value in given.items():
        if value is not None and setting not in uses:
            raise SettingsError(
                f"{named(setting)} is set but {named(SOURCE_AUTH)}={mode} does not use it: set {named(SOURCE_AUTH)} "
                "to the mode it belongs to, or remove it"
            )
    token_url = given[SOURCE_TOKEN_URL]
    if token_url is not None:
        try:
            parts = urlsplit(token_url) if token_url.isascii() else None
        except ValueError:  # `http://[::1`
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"{named(SOURCE_TOKEN_URL)} must be an http or https URL (the value is not shown)")
    client_id = given[SOURCE_CLIENT_ID] or (identity_client_id if mode == "entra" else None)
    return SourceAuth(mode, token_url, client_id, given[SOURCE_CLIENT_SECRET], given[SOURCE_SCOPE])


def _source(
    env: Mapping[str, str], name: str, prefix: str, *, in_azure: bool, identity_client_id: str | None
) -> SourceConfig:
    def read(setting: Setting[T]) -> T:
        return setting.read(env, prefix + setting.name.removeprefix("SOURCE_"))

    url = read(SOURCE_URL)
    if url is None:
        if in_azure:
            raise SettingsError(
                f"{prefix}URL is not set: in Azure the app needs the source API's URL as an app setting "
                "(it falls back to the local demo API only with a connection string)"
            )
        url = f"http://127.0.0.1:{DEMO_API_PORT}/ids"
    headers = _headers(read(SOURCE_HEADERS), prefix + "HEADERS")
    auth = _source_auth(read, prefix, identity_client_id)
    if auth.mode != "none" and any(header.lower() == "authorization" for header in headers):
        raise SettingsError(
            f"{prefix}HEADERS sets Authorization and {prefix}AUTH={auth.mode} sets it too: remove one of them"
        )
    return SourceConfig(
        name=name,
        url=url,
        headers=headers,
        items_path=read(SOURCE_ITEMS_PATH),
        pagination=read(SOURCE_PAGINATION),
        next_path=read(SOURCE_NEXT_PATH),
        cursor_path=read(SOURCE_CURSOR_PATH),
        cursor_param=read(SOURCE_CURSOR_PARAM),
        page_param=read(SOURCE_PAGE_PARAM),
        page_size_param=read(SOURCE_PAGE_SIZE_PARAM),
        page_size=read(SOURCE_PAGE_SIZE),
        first_page=read(SOURCE_FIRST_PAGE),
        auth=auth,
    )


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"  # a header name's or an auth scheme's characters
_HEADER_NAME = re.compile(_TOKEN + "{1,256}")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]{0,8192}")


def _headers(raw: str | None, name: str) -> dict[str, str]:
    """Header names and values an HTTP request can carry. Errors name the header, never its value
    (it is usually a secret), and never quote the setting's text."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise SettingsError(f"{name} must be a JSON object of header names to values; it is not JSON{where}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SettingsError(f'{name} must be a JSON object of strings, e.g. {{"x-api-key": "..."}}')
    for header, text in value.items():
        if not _HEADER_NAME.fullmatch(header):
            raise SettingsError(f"{name}: {header[:40]!r} is not a header name (letters, digits and !#$%&'*+.^_`|~-)")
        if not _HEADER_VALUE.fullmatch(text):
            raise SettingsError(
                f"{name}: the value of {header!r} holds a character a header cannot carry (a line break, a control "
                "or non-ASCII character) or is over 8,192 characters; the value is not shown"
            )
    return value


def _ttl(env: Mapping[str, str]) -> int | None:
    ttl = QUEUE_MESSAGE_TTL.read(env)
    if ttl == 0:
        raise SettingsError(f"{QUEUE_MESSAGE_TTL.name} must be a positive number of seconds, or -1 for never")
    return ttl


def _visibility_timeout(env: Mapping[str, str], ttl: int | None) -> int:
    """Seconds a new message stays hidden (Put Message's visibilitytimeout); less than its TTL."""
    hidden = QUEUE_MESSAGE_VISIBILITY_TIMEOUT.read(env)
    if hidden and ttl is not None and ttl != -1 and hidden >= ttl:
        raise SettingsError(
            f"{QUEUE_MESSAGE_VISIBILITY_TIMEOUT.name} ({hidden}) must be less than {QUEUE_MESSAGE_TTL.name} ({ttl})"
        )
    return hidden
