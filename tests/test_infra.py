"""Offline checks of infra/ (no Bicep compiler or Azure subscription here): every template parses, the
security promises hold in the parsed templates, checkov finds nothing unexpected, the scripts lint."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import pytest
from pycep import BicepParser

from core.settings import TABLE
from fanout.azurite import PROJECT_ROOT
from testkit.indexed_functions import indexed_functions

INFRA = PROJECT_ROOT / "infra"
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
CHECKOV = PROJECT_ROOT / ".venv-checkov" / "bin" / "checkov"
ROLE_IDS = {
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
# checkov findings we accept, each with its reason (anything else fails the test).
ACCEPTED_FINDINGS = {
    "CKV_AZURE_35": "storage firewall default Allow: Flex Consumption without a VNet and Event Grid reach it; "
    "shared keys are off, so only Entra ID principals with a role get in",
    "CKV_AZURE_59": "public network access on storage: the same; identity-only access instead of network isolation",
    "CKV_AZURE_206": "LRS: chunks are transient; the source API stays the system of record",
    "CKV_AZURE_222": "public network access on the app: its HTTP API and the Event Grid webhook must be reachable",
    "CKV_AZURE_225": "zone redundancy is a paid option of the plan; turn it on for production",
    "CKV_AZURE_212": "Flex Consumption scales from zero; always-ready instances are a paid option",
    "CKV_AZURE_213": "health check: an App Service feature Flex Consumption does not use",
    "CKV_AZURE_17": "client certificates: callers authenticate with function keys",
    "CKV_AZURE_13": "App Service Authentication: the endpoints use function keys (auth level FUNCTION)",
    "CKV_AZURE_63": "HTTP logging: Flex Consumption logs to Application Insights",
    "CKV_AZURE_65": "detailed error messages: Flex Consumption logs to Application Insights",
    "CKV_AZURE_66": "failed request tracing: Flex Consumption logs to Application Insights",
    "CKV_AZURE_80": ".NET version: a Python app",
    "CKV_AZURE_88": "Azure Files: Flex Consumption deploys from blob storage, by identity",
}


def parse(relative: str) -> dict[str, Any]:
    return BicepParser().parse(file_path=INFRA / relative)


def config(relative: str, resource: str) -> dict[str, Any]:
    return parse(relative)["resources"][resource]["config"]


@pytest.mark.parametrize("path", sorted(p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep")))
def test_every_bicep_file_parses(path):
    template = parse(path)
    assert template.get("resources") or template.get("modules")


def test_plan_is_flex_consumption_and_app_runs_python_311():
    plan = config("modules/function-app.bicep", "plan")
    app = config("modules/function-app.bicep", "functionApp")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert app["kind"] == "functionapp,linux"
    assert app["properties"]["functionAppConfig"]["runtime"]["name"] == "python"
    assert parse("main.bicep")["parameters"]["pythonVersion"]["default"] == "3.11"
    deployment = app["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert deployment["authentication"]["type"] == "UserAssignedIdentity"


def test_storage_has_no_shared_keys_no_public_blobs_and_tls12_https_only():
    properties = config("modules/storage.bicep", "storage")["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True


def test_app_insights_takes_entra_id_only():
    assert config("modules/monitoring.bicep", "appInsights")["properties"]["DisableLocalAuth"] is True


def test_roles_are_the_named_built_ins_scoped_to_the_storage_account_and_app_insights():
    roles = parse("modules/roles.bicep")
    variables = {name: spec["value"] for name, spec in roles["variables"].items()}
    assert {name: variables[name] for name in ROLE_IDS} == ROLE_IDS
    assert variables["storageRoles"] == ["storageBlobDataOwner", "storageQueueDataContributor",
                                         "storageTableDataContributor"]  # fmt: skip
    storage_roles = roles["resources"]["storageRoleAssignments"]["config"]
    assert storage_roles["loop_type"]["detail"] == {"item_name": "roleId", "array_name": "storageRoles"}
    assert storage_roles["config"]["scope"] == "storage"
    assert (
        storage_roles["config"]["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        == "roleId"
    )
    assert roles["resources"]["storage"]["type"] == "Microsoft.Storage/storageAccounts"
    assert roles["resources"]["metricsPublisher"]["config"]["scope"] == "appInsights"


def settings_read_by_the_code() -> set[str]:
    """Every setting in the table (the source settings as the default source reads them), but the
    connection string: in Azure storage is reached by identity only."""
    return {setting.name for setting in TABLE} - {"AzureWebJobsStorage"}


def app_settings_in_bicep() -> dict[str, Any]:
    main = parse("main.bicep")["modules"]["functionApp"]["config"]["params"]["appSettings"]
    fixed = config("modules/function-app.bicep", "functionApp__settings")["properties"]["function"]
    return {**main, **fixed["parameters"]["arg_2"]}


def test_every_setting_the_code_reads_is_set_and_storage_is_reached_by_identity():
    settings = app_settings_in_bicep()
    read = settings_read_by_the_code()
    assert len(read) > 35
    assert read - set(settings) == set()
    assert "AzureWebJobsStorage" not in settings
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["BLOB_TRIGGER_SOURCE"] == "EventGrid"


def test_event_grid_webhook_calls_the_real_ingestion_function():
    script = (INFRA / "event-subscription.sh").read_text()
    (name,) = re.findall(r'^INGESTION_FUNCTION="(\w+)"', script, flags=re.MULTILINE)
    assert "functionName=Host.Functions.${INGESTION_FUNCTION}" in script
    functions = indexed_functions(BLOB_TRIGGER_SOURCE="EventGrid")
    blob_triggered = [fn for fn, bindings in functions.items() if bindings[0]["type"] == "blobTrigger"]
    assert blob_triggered == [name]


@pytest.mark.parametrize("script", sorted(p.name for p in INFRA.glob("*.sh")))
def test_scripts_pass_bash_n_and_shellcheck(script):
    path = INFRA / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    subprocess.run(["bash", "-n", path], check=True)
    lint = subprocess.run([VENV_BIN / "shellcheck", "--severity=style", path], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def test_checkov_finds_no_parsing_errors_and_only_accepted_findings():
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        [CHECKOV, "--directory", INFRA, "--framework", "bicep", "--output", "json", "--skip-download", "--compact",
         "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0, result.stdout[:2000]
    assert summary["passed"] > 10  # it really read the templates
    failed = {check["check_id"] for entry in reports for check in entry["results"]["failed_checks"]}
    assert failed - set(ACCEPTED_FINDINGS) == set(), failed
