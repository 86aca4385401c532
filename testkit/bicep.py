"""The project's Bicep files as pycep parses them, for tests that check what they deploy."""

from __future__ import annotations

from typing import Any

from pycep import BicepParser

from fanout.azurite import PROJECT_ROOT

INFRA = PROJECT_ROOT / "infra"


def parse(relative: str) -> dict[str, Any]:
    return BicepParser().parse(file_path=INFRA / relative)


def config(relative: str, resource: str) -> dict[str, Any]:
    return parse(relative)["resources"][resource]["config"]
