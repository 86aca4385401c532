"""The README's settings table, rendered from `core.settings.TABLE` (`python -m fanout settings-table`)."""

from __future__ import annotations

from core.settings import SOURCE_SETTINGS, TABLE

NAMED_SOURCES_ROW = (
    '| `SOURCE_<NAME>__URL`, `SOURCE_<NAME>__<KEY>` | — | more sources, picked by `"source": "<name>"` '
    "(case-insensitive); each repeats the source settings above under its own prefix, e.g. "
    "`SOURCE_CRM__PAGINATION` |"
)


def settings_table() -> str:
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for setting in TABLE:
        rows.append(f"| `{setting.name}` | {setting.default_text} | {setting.meaning} |")
        if setting is SOURCE_SETTINGS[-1]:
            rows.append(NAMED_SOURCES_ROW)
    return "\n".join(rows) + "\n"
