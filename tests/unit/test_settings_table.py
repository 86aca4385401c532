"""One settings table: every default valid, docs/settings.md's table rendered from it, Azure without fallbacks."""

from __future__ import annotations

import re

import pytest

import core.settings as settings_module
from core.errors import SettingsError
from core.settings import GROUPS, TABLE, Choice, Number, Setting, Settings
from fanout.azurite import PROJECT_ROOT
from fanout.settings_table import BEGIN, END, settings_table

IN_AZURE = {
    "AzureWebJobsStorage__blobServiceUri": "https://acct.blob.core.windows.net",
    "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net",
}


def test_the_docs_settings_table_is_the_one_the_code_reads():
    docs = (PROJECT_ROOT / "docs" / "settings.md").read_text()
    start, end = docs.index(BEGIN), docs.index(END) + len(END)
    assert docs[start:end] + "\n" == settings_table(), (
        "docs/settings.md drifted: paste `python -m fanout settings-table`"
    )


def test_every_module_level_setting_is_in_the_table_once():
    declared = [value for value in vars(settings_module).values() if isinstance(value, Setting)]
    assert sorted(s.name for s in declared) == sorted(s.name for s in TABLE)
    assert [group for group, _ in GROUPS] == [
        "storage",
        "network",
        "source",
        "chunking",
        "ingestion",
        "queues",
        "delivery",
        "runs",
        "telemetry",
    ]


def test_every_setting_is_named_once_and_its_default_is_valid():
    names = [setting.name for setting in TABLE]
    assert len(names) == len(set(names))
    for setting in TABLE:
        if isinstance(setting, Number) and setting.default is not None:
            assert setting.low <= setting.default <= setting.high, setting.name
        if isinstance(setting, Choice):
            assert setting.default in setting.choices, setting.name
    Settings.from_env({})  # every default together works locally


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"CHUNK_SIZE": "9" * 5000}, "CHUNK_SIZE must be a whole number, got '9999"),
        ({"CHUNK_SIZE": "1e3"}, "CHUNK_SIZE must be a whole number"),
        ({"SOURCE_TIMEOUT": "nan"}, "SOURCE_TIMEOUT must be a number"),
        ({"SOURCE_TIMEOUT": "inf"}, "SOURCE_TIMEOUT must be a number"),
        ({"https_proxy": "socks5://ops:hunter22@gw:1080"}, "HTTPS_PROXY must be a proxy reached over plain HTTP, "),
        ({"HTTP_PROXY": "http://gw:99999"}, "HTTP_PROXY must be a proxy reached over plain HTTP, "),
        ({"SSL_CERT_FILE": "/nonexistent/ca.pem"}, "SSL_CERT_FILE '/nonexistent/ca.pem' is no PEM file"),
        ({"AZURE_HTTP_USER_AGENT": "x/1\r\nX-Injected: yes"}, "AZURE_HTTP_USER_AGENT must be at most 256 printable"),
        ({"AZURE_HTTP_USER_AGENT": "contoso-\u00e9"}, "AZURE_HTTP_USER_AGENT must be at most 256 printable"),
        ({"SOURCE_CRM__PAGINATION": "pages", "SOURCE_CRM__URL": "http://x"}, "SOURCE_CRM__PAGINATION must be one of"),
    ],
)
def test_a_malformed_setting_is_refused_with_its_name(env, error):
    with pytest.raises(SettingsError, match=re.escape(error)):
        Settings.from_env(env)


def test_in_azure_a_missing_source_url_is_a_startup_error_not_the_demo_api():
    with pytest.raises(SettingsError, match="SOURCE_URL is not set: in Azure"):
        Settings.from_env(IN_AZURE)
    assert Settings.from_env({**IN_AZURE, "SOURCE_URL": "https://api.example.com/ids"}).source(None).url == (
        "https://api.example.com/ids"
    )
    assert Settings.from_env({}).source(None).url == "http://127.0.0.1:7072/ids"  # locally: the demo API


@pytest.mark.parametrize(
    "headers",
    ['{"x-api-key": "s3cr3t-value\\n"}', '{"x-api-key": "s3cr3t-v\\u00e4lue"}', '{"x-api-key": "s3cr3t\\u0000"}',
     '{"bad name": "s3cr3t-value"}', '{"x-api-key": "s3cr3t-value"', '{"x-api-key": 5}'],
)  # fmt: skip
def test_a_header_setting_that_cannot_be_sent_is_refused_without_showing_its_value(headers):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"SOURCE_HEADERS": headers})
    assert "s3cr3t" not in str(refused.value)
    assert str(refused.value).startswith("SOURCE_HEADERS")


def test_header_values_are_the_secrets_to_redact():
    env = {"SOURCE_HEADERS": '{"x-api-key": "k-default"}', "SOURCE_CRM__URL": "http://crm", "SOURCE_CRM__HEADERS":
           '{"Authorization": "Bearer k-crm"}'}  # fmt: skip
    assert sorted(Settings.from_env(env).secrets) == ["Bearer k-crm", "k-default"]
