"""Configuration from environment variables, each with a default that works on Azurite."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import SettingsError

DEFAULT_SOURCE = "default"
DEMO_API_PORT = 7072
MAX_CHUNK_SIZE = 32_000
DEFAULT_CHUNK_CONTAINER = "chunks"
DEFAULT_CONTROL_QUEUE = "chunking-continuations"
_NAMED_SOURCE_URL = re.compile(r"^SOURCE_([A-Z0-9][A-Z0-9_]*?)__URL$")

MessageEncoding = Literal["base64", "none"]
LargeMessageMode = Literal["claim-check", "reject"]


@dataclass(frozen=True)
class StorageConfig:
    """Where storage is and how to authenticate: a connection string or a managed identity."""

    connection_string: str | None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    client_id: str | None = None
    use_env_settings: bool = False
    max_retries: int = 5
    retry_backoff: float = 1.0
    timeout: float = 30.0


Pagination = Literal["none", "next-link", "cursor", "page"]
# What describes a source: the default source reads SOURCE_<KEY>, a named one SOURCE_<NAME>__<KEY>.
SOURCE_KEYS = ("URL", "HEADERS", "ITEMS_PATH", "PAGINATION", "NEXT_PATH", "CURSOR_PATH", "CURSOR_PARAM",
               "PAGE_PARAM", "PAGE_SIZE_PARAM", "PAGE_SIZE", "FIRST_PAGE")  # fmt: skip


@dataclass(frozen=True)
class SourceConfig:
    """A source API: where its items are in a response, and how to reach the next page."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    items_path: str = ""
    pagination: Pagination = "none"
    next_path: str = ""
    cursor_path: str = "next_cursor"
    cursor_param: str = "cursor"
    page_param: str = "page"
    page_size_param: str = "per_page"
    page_size: int = 1000
    first_page: int = 1


@dataclass(frozen=True)
class RetryConfig:
    """How calls to a source are retried: exponential backoff with jitter, Retry-After honoured."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0


@dataclass(frozen=True)
class Settings:
    storage: StorageConfig
    sources: Mapping[str, SourceConfig]
    chunk_container: str = DEFAULT_CHUNK_CONTAINER
    runs_container: str = "ingestion-runs"
    chunk_size: int = 5000
    queue_name: str = "ingest"
    queue_partitions: int = 1
    message_encoding: MessageEncoding = "base64"
    message_ttl: int | None = None
    message_visibility_timeout: int = 0
    ingest_concurrency: int = 64
    checkpoint_every: int = 1000
    lease_seconds: float = 60.0
    large_message_mode: LargeMessageMode = "claim-check"
    large_message_container: str = "large-messages"
    upload_concurrency: int = 8
    source_timeout: float = 60.0
    source_retry: RetryConfig = RetryConfig()
    chunking_time_budget: float = 60.0
    control_queue: str = DEFAULT_CONTROL_QUEUE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        ttl = _ttl(env)
        return cls(
            storage=_storage_config(env),
            sources=_sources(env),
            chunk_container=chunk_container(env),
            runs_container=env.get("RUNS_CONTAINER", "ingestion-runs"),
            chunk_size=_int(env, "CHUNK_SIZE", 5000, low=1, high=MAX_CHUNK_SIZE),
            queue_name=env.get("QUEUE_NAME", "ingest"),
            queue_partitions=_int(env, "QUEUE_PARTITIONS", 1, low=1, high=100),
            message_encoding=_choice(env, "QUEUE_MESSAGE_ENCODING", "base64", ("base64", "none")),
            message_ttl=ttl,
            message_visibility_timeout=_visibility_timeout(env, ttl),
            ingest_concurrency=_int(env, "INGEST_CONCURRENCY", 64, low=1, high=1024),
            checkpoint_every=_int(env, "INGEST_CHECKPOINT_EVERY", 1000, low=1, high=MAX_CHUNK_SIZE),
            lease_seconds=_float(env, "INGEST_LEASE_SECONDS", 60.0, low=1.0, high=3600.0),
            large_message_mode=_choice(env, "LARGE_MESSAGE_MODE", "claim-check", ("claim-check", "reject")),
            large_message_container=env.get("LARGE_MESSAGE_CONTAINER", "large-messages"),
            upload_concurrency=_int(env, "CHUNK_UPLOAD_CONCURRENCY", 8, low=1, high=64),
            source_timeout=_float(env, "SOURCE_TIMEOUT", 60.0, low=0.1, high=3600.0),
            chunking_time_budget=_float(env, "CHUNKING_TIME_BUDGET", 60.0, low=0.0, high=200.0),
            control_queue=control_queue(env),
            source_retry=RetryConfig(
                max_attempts=_int(env, "SOURCE_MAX_ATTEMPTS", 5, low=1, high=100),
                base_delay=_float(env, "SOURCE_RETRY_BASE_DELAY", 0.5, low=0.0, high=60.0),
                max_delay=_float(env, "SOURCE_RETRY_MAX_DELAY", 30.0, low=0.0, high=600.0),
            ),
        )

    @property
    def queue_names(self) -> list[str]:
        """The target queues: QUEUE_NAME, or QUEUE_NAME-0 … -{N-1} with QUEUE_PARTITIONS=N."""
        if self.queue_partitions == 1:
            return [self.queue_name]
        return [f"{self.queue_name}-{partition}" for partition in range(self.queue_partitions)]

    def source(self, name: str | None) -> SourceConfig:
        return self.sources[(name or DEFAULT_SOURCE).lower()]


def blob_trigger_source(env: Mapping[str, str] | None = None) -> Literal["LogsAndContainerScan", "EventGrid"]:
    env = os.environ if env is None else env
    return _choice(env, "BLOB_TRIGGER_SOURCE", "LogsAndContainerScan", ("LogsAndContainerScan", "EventGrid"))


def control_queue(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("CONTROL_QUEUE", DEFAULT_CONTROL_QUEUE)


def chunk_container(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("CHUNK_CONTAINER", DEFAULT_CHUNK_CONTAINER)


def _storage_config(env: Mapping[str, str]) -> StorageConfig:
    common = {
        "use_env_settings": env.get("STORAGE_USE_PROXY_ENV", "false").lower() in ("1", "true", "yes"),
        "max_retries": _int(env, "STORAGE_MAX_RETRIES", 5, low=0, high=20),
        "retry_backoff": _float(env, "STORAGE_RETRY_BACKOFF", 1.0, low=0.0, high=60.0),
        "timeout": _float(env, "STORAGE_TIMEOUT", 30.0, low=1.0, high=600.0),
    }
    blob_uri = env.get("AzureWebJobsStorage__blobServiceUri")
    if blob_uri and not env.get("AzureWebJobsStorage"):
        queue_uri = env.get("AzureWebJobsStorage__queueServiceUri")
        if not queue_uri:
            raise SettingsError(
                "AzureWebJobsStorage__blobServiceUri is set but AzureWebJobsStorage__queueServiceUri "
                "is not: set both for identity-based storage access."
            )
        return StorageConfig(
            connection_string=None,
            blob_service_uri=blob_uri,
            queue_service_uri=queue_uri,
            client_id=env.get("AzureWebJobsStorage__clientId"),
            **common,
        )
    return StorageConfig(connection_string=env.get("AzureWebJobsStorage") or "UseDevelopmentStorage=true", **common)


def _sources(env: Mapping[str, str]) -> dict[str, SourceConfig]:
    sources = {DEFAULT_SOURCE: _source(env, DEFAULT_SOURCE, "SOURCE_")}
    for key in env:
        match = _NAMED_SOURCE_URL.match(key)
        if match:
            name = match.group(1).lower()
            sources[name] = _source(env, name, f"SOURCE_{match.group(1)}__")
    return sources


def _source(env: Mapping[str, str], name: str, prefix: str) -> SourceConfig:
    def text(key: str, default: str) -> str:
        return env.get(prefix + key) or default

    return SourceConfig(
        name=name,
        url=text("URL", f"http://127.0.0.1:{DEMO_API_PORT}/ids"),
        headers=_headers(env, prefix + "HEADERS"),
        items_path=text("ITEMS_PATH", ""),
        pagination=_choice(env, prefix + "PAGINATION", "none", ("none", "next-link", "cursor", "page")),
        next_path=text("NEXT_PATH", ""),
        cursor_path=text("CURSOR_PATH", "next_cursor"),
        cursor_param=text("CURSOR_PARAM", "cursor"),
        page_param=text("PAGE_PARAM", "page"),
        page_size_param=text("PAGE_SIZE_PARAM", "per_page"),
        page_size=_int(env, prefix + "PAGE_SIZE", 1000, low=1, high=1_000_000),
        first_page=_int(env, prefix + "FIRST_PAGE", 1, low=0, high=1_000_000),
    )


def _headers(env: Mapping[str, str], key: str) -> dict[str, str]:
    raw = env.get(key)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{key} must be a JSON object of header names to values: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SettingsError(f'{key} must be a JSON object of strings, e.g. {{"x-api-key": "..."}}')
    return value


def _int(env: Mapping[str, str], key: str, default: int, *, low: int, high: int) -> int:
    return _number(env, key, default, low=low, high=high, kind=int)


def _float(env: Mapping[str, str], key: str, default: float, *, low: float, high: float) -> float:
    return _number(env, key, default, low=low, high=high, kind=float)


def _number(env: Mapping[str, str], key: str, default: float, *, low: float, high: float, kind: type) -> Any:
    raw = env.get(key)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{key} must be {'a whole number' if kind is int else 'a number'}, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{key} must be between {low} and {high}, got {value}")
    return value


def _choice(env: Mapping[str, str], key: str, default: str, allowed: tuple[str, ...]):
    value = env.get(key) or default
    if value not in allowed:
        raise SettingsError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _ttl(env: Mapping[str, str]) -> int | None:
    raw = env.get("QUEUE_MESSAGE_TTL")
    if raw in (None, ""):
        return None
    ttl = _int(env, "QUEUE_MESSAGE_TTL", -1, low=-1, high=2**31 - 1)
    if ttl == 0:
        raise SettingsError("QUEUE_MESSAGE_TTL must be a positive number of seconds, or -1 for never")
    return ttl


def _visibility_timeout(env: Mapping[str, str], ttl: int | None) -> int:
    """Seconds a new message stays hidden (Put Message's visibilitytimeout); less than its TTL."""
    hidden = _int(env, "QUEUE_MESSAGE_VISIBILITY_TIMEOUT", 0, low=0, high=7 * 24 * 3600)
    if hidden and ttl not in (None, -1) and hidden >= ttl:
        raise SettingsError(f"QUEUE_MESSAGE_VISIBILITY_TIMEOUT ({hidden}) must be less than QUEUE_MESSAGE_TTL ({ttl})")
    return hidden
