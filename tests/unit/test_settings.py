"""Settings that cannot work are refused at start with the setting's name and what it must be; which values
are secrets."""

from __future__ import annotations

import base64
import json
import re

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient
from hypothesis import given
from hypothesis import strategies as st

from core.errors import SettingsError
from core.redact import REDACTED, Redactor
from core.settings import Settings


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"QUEUE_MESSAGE_TTL": "0"}, "QUEUE_MESSAGE_TTL must be a positive number of seconds, or -1 for never"),
        ({"QUEUE_MESSAGE_VISIBILITY_TIMEOUT": "604801"}, "QUEUE_MESSAGE_VISIBILITY_TIMEOUT must be between"),
        (
            {"QUEUE_MESSAGE_TTL": "60", "QUEUE_MESSAGE_VISIBILITY_TIMEOUT": "60"},
            r"QUEUE_MESSAGE_VISIBILITY_TIMEOUT \(60\) must be less than QUEUE_MESSAGE_TTL \(60\)",
        ),
        ({"QUEUE_MESSAGE_ENCODING": "utf8"}, "QUEUE_MESSAGE_ENCODING must be one of base64, none, got 'utf8'"),
        ({"QUEUE_PARTITIONS": "0"}, "QUEUE_PARTITIONS must be between 1 and 100"),
        ({"INGEST_CONCURRENCY": "lots"}, "INGEST_CONCURRENCY must be"),
    ],
)
def test_a_setting_out_of_range_is_refused_with_its_name(env, error):
    with pytest.raises(SettingsError, match=error):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("env", "visibility", "ttl"),
    [({}, 0, None), ({"QUEUE_MESSAGE_VISIBILITY_TIMEOUT": "30", "QUEUE_MESSAGE_TTL": "-1"}, 30, -1)],
)
def test_visibility_timeout_and_ttl_defaults_and_values(env, visibility, ttl):
    settings = Settings.from_env(env)
    assert (settings.message_visibility_timeout, settings.message_ttl) == (visibility, ttl)


# --- queue and container names -----------------------------------------------------------------------

QUEUES = ["QUEUE_NAME", "CONTROL_QUEUE", "REDRIVE_QUEUE", "RUN_EVENTS_QUEUE"]
CONTAINERS = ["CHUNK_CONTAINER", "RUNS_CONTAINER", "LARGE_MESSAGE_CONTAINER", "EVENT_GRID_DEADLETTER_CONTAINER"]
# Azure's rule for queue and container names, written out: 3-63 lowercase letters, digits and hyphens,
# a letter or digit first and last, no two hyphens in a row.
AZURE_NAME = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
BAD_NAMES = ["Ingest_Queue", "Chunks", "ab", "a" * 64, "-ingest", "ingest-", "in--gest", "in.gest", "ingést"]
GOOD_NAMES = ["abc", "a" * 63, "a-1-b", "123", "0-a"]


@pytest.mark.parametrize("setting", QUEUES + CONTAINERS)
@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_queue_or_container_name_azure_refuses_is_refused_with_the_setting_and_the_rule(setting, name):
    kind = "queue" if setting in QUEUES else "container"
    with pytest.raises(SettingsError, match=f"^{setting} must be a {kind} name Azure allows: 3 to 63 lowercase"):
        Settings.from_env({setting: name})


@pytest.mark.parametrize("setting", QUEUES + CONTAINERS)
@pytest.mark.parametrize("name", GOOD_NAMES)
def test_a_queue_or_container_name_azure_allows_is_taken(setting, name):
    settings = Settings.from_env({setting: name})
    attribute = {"EVENT_GRID_DEADLETTER_CONTAINER": "deadletter_container"}.get(setting, setting.lower())
    assert getattr(settings, attribute) == name


@given(
    st.sampled_from(QUEUES + CONTAINERS),
    st.text(alphabet="ab09-_A.", min_size=1, max_size=70) | st.sampled_from(BAD_NAMES + GOOD_NAMES),
)
def test_names_are_refused_exactly_when_azures_rule_refuses_them(setting, name):
    try:
        Settings.from_env({setting: name})
    except SettingsError as refused:
        assert not AZURE_NAME.fullmatch(name)
        assert str(refused).startswith(setting)
    else:
        assert AZURE_NAME.fullmatch(name)


def test_every_partition_queue_must_fit_the_rule_so_a_long_queue_name_leaves_room_for_its_suffix():
    name = "q" * 61
    assert Settings.from_env({"QUEUE_NAME": name, "QUEUE_PARTITIONS": "10"}).queue_names[-1] == f"{name}-9"
    with pytest.raises(SettingsError, match=r"^QUEUE_NAME's partition queue \(with QUEUE_PARTITIONS=11\) must be"):
        Settings.from_env({"QUEUE_NAME": name, "QUEUE_PARTITIONS": "11"})  # `-10` makes 64 characters


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"REDRIVE_QUEUE": "ingest"}, "QUEUE_NAME and REDRIVE_QUEUE both name the queue 'ingest'"),
        ({"RUN_EVENTS_QUEUE": "chunking-continuations"}, "CONTROL_QUEUE and RUN_EVENTS_QUEUE both name the queue"),
        ({"REDRIVE_QUEUE": "events", "RUN_EVENTS_QUEUE": "events"}, "REDRIVE_QUEUE and RUN_EVENTS_QUEUE both name"),
        (
            {"QUEUE_PARTITIONS": "3", "CONTROL_QUEUE": "ingest-2"},
            "QUEUE_NAME and CONTROL_QUEUE both name the queue 'ingest-2': give each its own queue",
        ),
        ({"RUNS_CONTAINER": "chunks"}, "CHUNK_CONTAINER and RUNS_CONTAINER both name the container 'chunks'"),
        (
            {"EVENT_GRID_DEADLETTER_CONTAINER": "large-messages"},
            "LARGE_MESSAGE_CONTAINER and EVENT_GRID_DEADLETTER_CONTAINER both name the container 'large-messages'",
        ),
    ],
)
def test_two_settings_naming_the_same_queue_or_container_are_refused_naming_both(env, error):
    with pytest.raises(SettingsError, match=f"^{re.escape(error)}"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {"QUEUE_PARTITIONS": "2", "CONTROL_QUEUE": "ingest"},  # the queues are ingest-0 and ingest-1
        {"CHUNK_CONTAINER": "ingest"},  # queues and containers do not meet
        {"QUEUE_NAME": "work", "REDRIVE_QUEUE": "ingest"},
    ],
)
def test_queues_and_containers_apart_are_taken(env):
    Settings.from_env(env)


# --- storage connection strings ----------------------------------------------------------------------

KEY = base64.b64encode(b"s3cr3t account key, 64 bytes as Azure makes them ......").decode()
SAS = "sv=2024-11-04&ss=bq&srt=sco&sp=rwdlacup&se=2030-01-01T00:00:00Z&sig=s3cr3t%2Bsig%3D"
BLOB = "https://acct.blob.core.windows.net"
QUEUE = "https://acct.queue.core.windows.net"


@pytest.mark.parametrize(
    "connection",
    [
        "UseDevelopmentStorage=true",
        "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net",
        f"accountname=acct;accountkey={KEY};",  # keys in any case, a trailing `;`
        f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={KEY};BlobEndpoint={BLOB};QueueEndpoint={QUEUE};"
        f"QueueSecondaryEndpoint=https://acct-secondary.queue.core.windows.net;TableEndpoint=https://t",
        f"AccountName=acct;SharedAccessSignature={SAS}",
        f"BlobEndpoint={BLOB};QueueEndpoint={QUEUE};SharedAccessSignature={SAS}",
        f"BlobEndpoint={BLOB}/?{SAS};QueueEndpoint={QUEUE}/?{SAS}",  # explicit endpoints, each with its SAS
    ],
)
def test_a_connection_string_the_storage_sdk_works_with_is_taken(connection):
    assert Settings.from_env({"AzureWebJobsStorage": connection}).storage.connection_string == connection
    BlobServiceClient.from_connection_string(connection)  # and the SDK agrees
    QueueServiceClient.from_connection_string(connection)


@pytest.mark.parametrize(
    ("connection", "error"),
    [
        ("nonsense", "it must be key=value pairs separated by ';'"),
        (f"AccountName=acct;;AccountKey={KEY}", "it must be key=value pairs separated by ';'"),
        ("AccountName=x", "AccountName needs AccountKey or SharedAccessSignature"),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=%%%", "AccountKey must be base64"),
        (f"AccountName=acct;AccountKey={KEY[:-1]}", "AccountKey must be base64"),  # its padding cut
        (f"AccountName=acct;AccountKey=s3cr3t-{KEY}", "AccountKey must be base64"),
        (f"AccountKey={KEY};BlobEndpoint={BLOB};QueueEndpoint={QUEUE}", "AccountKey needs AccountName"),
        ("UseDevelopmentStorage=True", "it must be UseDevelopmentStorage=true or name the account"),
        (f"QueueEndpoint={QUEUE};SharedAccessSignature={SAS}", "AccountName, or BlobEndpoint and QueueEndpoint"),
        (f"AccountName=acct;AccountKey={KEY};BlobSecondaryEndpoint={BLOB}", "BlobSecondaryEndpoint needs BlobEndpoint"),
    ],
)
def test_a_connection_string_that_cannot_work_is_refused_without_showing_it(connection, error):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"AzureWebJobsStorage": connection})
    message = str(refused.value)
    assert message.startswith("AzureWebJobsStorage is not a storage connection string: ")
    assert error in message
    assert connection not in message and "s3cr3t" not in message and KEY not in message and "%%%" not in message


@pytest.mark.parametrize(
    ("connection", "error"),
    [
        ("AccountName=second", "AccountName needs AccountKey or SharedAccessSignature"),
        (f"BlobEndpoint={BLOB};SharedAccessSignature={SAS}", "name the account: AccountName, or QueueEndpoint"),
        (f"AccountName=second;AccountKey=s3cr3t_{KEY}", "AccountKey must be base64"),
    ],
)
def test_a_queue_accounts_connection_string_is_held_to_the_same_rule(connection, error):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"QUEUE_ACCOUNTS": "SECOND", "SECOND": connection})
    message = str(refused.value)
    assert message.startswith("SECOND (in QUEUE_ACCOUNTS) is not a storage connection string: ") and error in message
    assert "s3cr3t" not in message and KEY not in message


def test_a_queue_account_needs_only_the_queue_service():
    connection = f"QueueEndpoint={QUEUE};SharedAccessSignature={SAS}"
    (account,) = Settings.from_env({"QUEUE_ACCOUNTS": "SECOND", "SECOND": connection}).queue_accounts
    assert account.storage.connection_string == connection


# --- secrets -----------------------------------------------------------------------------------------


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


def redacted(text: str, **env: str) -> str:
    """`text` through a redactor of exactly the secrets these settings configure."""
    return Redactor(Settings.from_env(env).secrets)(text)


def test_by_default_nothing_is_secret():
    assert Settings.from_env({}).secrets == []


@pytest.mark.parametrize(
    ("url", "echoed", "kept"),
    [
        ("https://alice:pa%24%24word@api.example.com/ids", "user alice:pa$$word, then pa%24%24word", "user"),
        ("https://ghp_t0kenvalue@api.example.com/ids?page=2", "token ghp_t0kenvalue refused", "refused"),
        ("https://api.example.com/ids?mail=a@b.example", "mail a@b.example unknown", "unknown"),
    ],
)
def test_a_source_urls_userinfo_and_query_values_are_redacted_as_written_and_decoded(url, echoed, kept):
    text = redacted(echoed, SOURCE_URL=url)
    assert REDACTED in text and kept in text
    assert not any(secret in text for secret in ("pa$$word", "pa%24%24word", "ghp_t0kenvalue", "a@b.example"))


def test_a_basic_headers_base64_and_decoded_user_password_and_password_are_redacted():
    header = basic(b"alice:s3cr3t-pw")
    for echoed in (header, header.removeprefix("Basic "), "alice:s3cr3t-pw", "password s3cr3t-pw"):
        assert "s3cr3t" not in redacted(echoed, SOURCE_HEADERS=json.dumps({"Authorization": header}))


@pytest.mark.parametrize(
    ("value", "echoed"),
    [
        ("Bearer eyJ0b2tlbg", "token eyJ0b2tlbg has expired"),
        ("Token  abc-123-xyz ", "key abc-123-xyz refused"),  # any scheme; spaces around
        ("k3y-value", "key k3y-value refused"),  # no scheme
    ],
)
def test_a_header_values_credentials_after_its_scheme_are_redacted_alone_too(value, echoed):
    text = redacted(echoed, SOURCE_HEADERS=json.dumps({"x-auth": value}))
    assert REDACTED in text and value.strip().split()[-1] not in text


def test_storage_account_keys_and_shared_access_signatures_are_redacted():
    second = base64.b64encode(b"the second account's key").decode()
    env = {
        "AzureWebJobsStorage": f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY}",
        "QUEUE_ACCOUNTS": "AzureWebJobsStorage,SECOND,THIRD",
        "SECOND": f"AccountName=second;AccountKey={second}",
        "THIRD": f"QueueEndpoint={QUEUE};SharedAccessSignature=?{SAS}",
    }
    text = redacted(f"keys {KEY} and {second}; sig s3cr3t+sig= (sent as s3cr3t%2Bsig%3D)", **env)
    assert KEY not in text and second not in text and "s3cr3t" not in text


def test_the_application_insights_instrumentation_key_is_not_secret():
    connection = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://in.example/"
    assert Settings.from_env({"APPLICATIONINSIGHTS_CONNECTION_STRING": connection}).secrets == []


def test_very_short_values_stay_unredacted_while_the_longer_forms_they_are_part_of_go():
    assert redacted("pw: bob:pw", SOURCE_URL="https://bob:pw@api.example.com/ids") == "pw: [redacted]"


def test_a_numeric_query_value_of_eight_digits_or_more_is_a_secret_a_shorter_one_is_not():
    url = "https://api.example.com/ids?api_key=83741920573619&count=1000&pin=7305"
    text = redacted("/ids?api_key=83741920573619&count=1000&pin=7305", SOURCE_URL=url)
    assert "83741920573619" not in text and "count=1000" in text and "pin=7305" in text


OAUTH2 = {
    "SOURCE_AUTH": "oauth2-client-credentials", "SOURCE_TOKEN_URL": "https://login.example.com/token",
    "SOURCE_CLIENT_ID": "fanout", "SOURCE_CLIENT_SECRET": "cs~Q8v.2kLm_9TzXr4Wn",
}  # fmt: skip


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"SOURCE_AUTH": "oauth2"}, "SOURCE_AUTH must be one of none, oauth2-client-credentials, entra, got 'oauth2'"),
        ({**OAUTH2, "SOURCE_TOKEN_URL": ""}, "SOURCE_AUTH=oauth2-client-credentials needs SOURCE_TOKEN_URL"),
        ({**OAUTH2, "SOURCE_CLIENT_SECRET": ""}, "needs SOURCE_CLIENT_SECRET"),
        ({**OAUTH2, "SOURCE_TOKEN_URL": "login.example.com/token"}, "SOURCE_TOKEN_URL must be an http or https URL"),
        ({**OAUTH2, "SOURCE_TOKEN_URL": "http://[::1"}, "SOURCE_TOKEN_URL must be an http or https URL"),
        ({"SOURCE_AUTH": "entra"}, "SOURCE_AUTH=entra needs SOURCE_SCOPE"),
        ({"SOURCE_AUTH": "entra", "SOURCE_SCOPE": "s", "SOURCE_CLIENT_SECRET": "x"}, "SOURCE_CLIENT_SECRET is set but"),
        ({"SOURCE_CLIENT_ID": "fanout"}, "SOURCE_CLIENT_ID is set but SOURCE_AUTH=none does not use it"),
        ({**OAUTH2, "SOURCE_HEADERS": '{"authorization": "Bearer x"}'}, "SOURCE_HEADERS sets Authorization"),
        ({"SOURCE_CRM__URL": "http://crm/ids", "SOURCE_CRM__AUTH": "entra"}, "=entra needs SOURCE_CRM__SCOPE"),
    ],
)  # fmt: skip
def test_source_auth_that_cannot_work_is_refused_naming_the_setting_never_a_value(env, error):
    with pytest.raises(SettingsError, match=re.escape(error)) as refused:
        Settings.from_env(env)
    assert "cs~Q8v" not in str(refused.value) and "login.example.com" not in str(refused.value)


def test_entra_signs_in_as_the_storage_identity_unless_the_source_names_another():
    env = {
        "AzureWebJobsStorage__blobServiceUri": "https://acct.blob.core.windows.net",
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net",
        "AzureWebJobsStorage__clientId": "app-id", "SOURCE_URL": "https://api.example.com/ids",
        "SOURCE_AUTH": "entra", "SOURCE_SCOPE": "api://ids/.default",
    }  # fmt: skip
    assert Settings.from_env(env).source(None).auth.client_id == "app-id"
    assert Settings.from_env({**env, "SOURCE_CLIENT_ID": "other"}).source(None).auth.client_id == "other"


def test_the_client_secret_and_the_token_urls_credentials_are_secrets_and_never_in_a_repr():
    env = {**OAUTH2, "SOURCE_TOKEN_URL": "https://login.example.com/token?key=tokenurl-key-1"}
    auth = Settings.from_env(env).source(None).auth
    assert "cs~Q8v" not in repr(auth)
    header = basic(b"fanout:cs~Q8v.2kLm_9TzXr4Wn")  # as the token endpoint is sent it
    text = redacted(f"secret {OAUTH2['SOURCE_CLIENT_SECRET']}, key tokenurl-key-1, {header}", **env)
    assert "cs~Q8v" not in text and "tokenurl-key-1" not in text and header.removeprefix("Basic ") not in text
