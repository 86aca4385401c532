"""Settings that cannot work are refused at start with the setting's name and what it must be."""

from __future__ import annotations

import pytest

from core.errors import SettingsError
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
