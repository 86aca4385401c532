"""Offline checks of infra/ (no Bicep compiler or Azure subscription here): every template parses, the
security promises hold in the parsed templates, checkov finds nothing unexpected, the scripts lint."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from typing import Any

import pytest

from core.settings import GROUPS, TABLE
from fanout.azurite import PROJECT_ROOT
from testkit.bicep import INFRA, config, evaluate, parse
from testkit.indexed_functions import indexed_functions

VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
CHECKOV = PROJECT_ROOT / ".venv-checkov" / "bin" / "checkov"
ROLE_IDS = {
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
}
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
# checkov findings we accept, each with its reason (anything else fails the test).
ACCEPTED_FINDINGS = {
    "CKV_AZURE_35": "storage firewall default Allow unless vnetEnabled (checkov does not evaluate the condition; "
    "asserted below): Flex Consumption without a VNet reaches it; shared keys are off, so only Entra ID principals "
    "with a role get in",
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
    "CKV_AZURE_109": "Key Vault firewall default Allow unless vnetEnabled (asserted below): a Flex Consumption app "
    "without a VNet resolves Key Vault references over the public endpoint; RBAC mode, so only principals with a "
    "role on the vault read it",
    "CKV_AZURE_189": "public network access on Key Vault: the same",
    "CKV_AZURE_193": "public network access on the optional run-events topic unless vnetEnabled (asserted in "
    "test_infra_run_events.py): the app, without a VNet, posts to it over the public endpoint; local auth is off, so "
    "only an Entra principal with EventGrid Data Sender sends",
    "CKV_AZURE_110": "no purge protection, for a sample: it can never be turned off and would keep the vault's name "
    "taken after destroy.sh, so the environment could not be redeployed; soft delete is on; turn it on in production",
    "CKV_AZURE_42": "recoverable Key Vault: soft delete is on; checkov also wants purge protection (CKV_AZURE_110)",
    "CKV_AZURE_41": "no secret expiry: the Key Vault reference would stop resolving and the app lose its source "
    "headers or client secret on that date; the operator rotates them by redeploying with new values",
}


def accessor(expression: Any) -> str:
    """`a.b.c` for pycep's nested property accessors; a plain name as it is."""
    if isinstance(expression, str):
        return expression
    operands = expression["operator"]["operands"]
    assert expression["operator"]["type"] == "property_accessor", expression
    return f"{accessor(operands['operand_1'])}.{accessor(operands['operand_2'])}"


def role_id_variable(assignment: dict[str, Any]) -> str:
    return assignment["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]


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
    connection string (in Azure storage is reached by identity only), what the platform sets itself, and the
    network's, which the operator sets where the network needs them (an empty SSL_CERT_FILE would empty OpenSSL's
    store)."""
    network = {setting.name for setting in dict(GROUPS)["network"]}
    return {setting.name for setting in TABLE} - {"AzureWebJobsStorage", "WEBSITE_HOSTNAME"} - network


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


def test_key_vault_is_rbac_only_and_the_identity_reads_secrets_on_that_vault_only():
    vault = config("modules/key-vault.bicep", "vault")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert "accessPolicies" not in vault
    assert vault["enableSoftDelete"] is True
    assert vault.get("enablePurgeProtection", True) is True  # ARM takes true or nothing; false is refused
    roles = parse("modules/roles.bicep")
    assert roles["variables"]["keyVaultSecretsUser"]["value"] == ROLE_IDS["keyVaultSecretsUser"]
    assert roles["resources"]["keyVault"]["type"] == "Microsoft.KeyVault/vaults"
    assert roles["resources"]["keyVault"]["config"]["name"] == "keyVaultName"
    secrets_user = roles["resources"]["secretsUser"]["config"]
    assert secrets_user["scope"] == "keyVault"
    assert role_id_variable(secrets_user) == "keyVaultSecretsUser"
    assert accessor(secrets_user["properties"]["principalId"]) == "principalId"
    granted = [role_id_variable(r["config"].get("config", r["config"])) for r in roles["resources"].values()
               if r["type"] == "Microsoft.Authorization/roleAssignments"]  # fmt: skip
    assert granted.count("keyVaultSecretsUser") == 1
    main = parse("main.bicep")["modules"]
    assert accessor(main["roles"]["config"]["params"]["keyVaultName"]) == "keyVault.outputs.name"


SECRETS = [  # (parameter, app setting, secret name, content type, Key Vault module output)
    ("sourceHeaders", "SOURCE_HEADERS", "source-headers", "application/json", "sourceHeadersSecretUri"),
    ("sourceClientSecret", "SOURCE_CLIENT_SECRET", "source-client-secret", "text/plain", "sourceClientSecretUri"),
]


def key_vault_secrets(**given: str) -> list[dict[str, Any]]:
    """The secrets modules/key-vault.bicep writes for these parameter values (the others empty)."""
    variables = parse("modules/key-vault.bicep")["variables"]
    names: dict[str, Any] = {parameter: "" for parameter, *_ in SECRETS} | given
    names |= {name: spec["value"] for name, spec in variables.items() if name.endswith("SecretName")}
    for partial in ("sourceHeadersSecrets", "sourceClientSecrets"):
        names[partial] = evaluate(variables[partial]["value"], names)
    return evaluate(variables["secrets"]["value"], names)


@pytest.mark.parametrize(("parameter", "setting", "secret_name", "content_type", "output"), SECRETS)
def test_each_secret_lives_in_key_vault_and_its_app_setting_only_references_it(
    parameter, setting, secret_name, content_type, output
):
    main = parse("main.bicep")
    assert {"type": "secure"} in main["parameters"][parameter]["decorators"]
    assert main["parameters"][parameter]["default"] == ""
    assert main["modules"]["keyVault"]["config"]["params"][parameter] == parameter
    key_vault = parse("modules/key-vault.bicep")
    assert {"type": "secure"} in key_vault["parameters"][parameter]["decorators"]  # out of deployment history
    assert key_vault_secrets() == []  # nothing given: no secret, not an empty one
    (secret,) = key_vault_secrets(**{parameter: "s3cr3t"})  # given: that one secret only
    assert secret == {"name": secret_name, "value": "s3cr3t", "contentType": content_type}
    written = key_vault["resources"]["vaultSecrets"]["config"]
    assert written["loop_type"]["detail"] == {"item_name": "secret", "array_name": "secrets"}
    properties = {"value": "s3cr3t", "contentType": content_type}
    assert evaluate(written["config"], {"secret": secret}) == {"parent": "vault", "name": secret_name,
                                                               "properties": properties}  # fmt: skip
    name_variable = next(name for name, spec in key_vault["variables"].items() if spec["value"] == secret_name)
    assert key_vault["outputs"][output]["value"] == "${vault.properties.vaultUri}secrets/${" + name_variable + "}"
    app_setting = app_settings_in_bicep()[setting]
    assert evaluate(app_setting, {parameter: ""}) == ""  # none: empty, not a reference to a missing secret
    reference = "@Microsoft.KeyVault(SecretUri=${keyVault.outputs." + output + "})"
    assert evaluate(app_setting, {parameter: "s3cr3t"}) == reference
    site = config("modules/function-app.bicep", "functionApp")
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"  # resolved by the user-assigned identity


def test_basic_publishing_credentials_are_off_for_ftp_and_scm():
    resources = parse("modules/function-app.bicep")["resources"].values()
    policies = {r["config"]["name"]: r["config"] for r in resources
                if r["type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"}  # fmt: skip
    assert set(policies) == {"ftp", "scm"}
    for policy in policies.values():
        assert policy["parent"] == "functionApp"
        assert policy["properties"] == {"allow": False}


def test_event_subscription_retries_then_dead_letters_with_the_topic_identity():
    template = parse("event-subscription.bicep")
    subscription = template["resources"]["chunkCreated"]
    assert subscription["type"] == "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    properties = subscription["config"]["properties"]
    parameters = template["parameters"]
    retry = properties["retryPolicy"]
    assert set(retry) == {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"}
    assert parameters[retry["maxDeliveryAttempts"]]["default"] == 30
    assert parameters[retry["eventTimeToLiveInMinutes"]]["default"] == 1440
    dead_letter = properties["deadLetterWithResourceIdentity"]
    assert "deadLetterDestination" not in properties  # that one would need shared keys, which are off
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    destination = dead_letter["deadLetterDestination"]
    assert destination["endpointType"] == "StorageBlob"
    assert accessor(destination["properties"]["resourceId"]) == "topic.properties.source"  # the same account
    assert parameters[destination["properties"]["blobContainerName"]]["default"] == "eventgrid-deadletter"
    assert properties["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/${chunkContainerName}/"

    main = parse("main.bicep")
    assert main["parameters"]["deadLetterContainerName"]["default"] == "eventgrid-deadletter"
    assert "deadLetterContainerName" in main["modules"]["storage"]["config"]["params"]["containerNames"]
    assert main["outputs"]["EVENT_GRID_DEADLETTER_CONTAINER"]["value"] == "deadLetterContainerName"
    assert app_settings_in_bicep()["EVENT_GRID_DEADLETTER_CONTAINER"] == "deadLetterContainerName"
    event_grid = main["modules"]["eventGrid"]["config"]["params"]
    assert event_grid["deadLetterContainerName"] == "deadLetterContainerName"

    topic = parse("modules/event-grid.bicep")
    assert topic["resources"]["topic"]["config"]["identity"] == {"type": "SystemAssigned"}
    assert topic["variables"]["storageBlobDataContributor"]["value"] == STORAGE_BLOB_DATA_CONTRIBUTOR
    writer = topic["resources"]["deadLetterWriter"]["config"]
    assert writer["scope"] == "deadLetterContainer"  # that container only, not the account
    assert topic["resources"]["deadLetterContainer"]["config"]["name"] == "deadLetterContainerName"
    assert role_id_variable(writer) == "storageBlobDataContributor"
    assert accessor(writer["properties"]["principalId"]) == "topic.identity.principalId"


def test_the_webhook_key_is_read_inside_azure_never_by_a_script():
    properties = config("event-subscription.bicep", "chunkCreated")["properties"]
    assert properties["destination"]["properties"]["endpointUrl"] == (
        "${webhookUrl}&code=${functionHost.listKeys().systemKeys.blobs_extension}"
    )
    host = parse("event-subscription.bicep")["resources"]["functionHost"]
    assert (host["type"], host["existing"], host["config"]["name"]) == ("Microsoft.Web/sites/host", True, "default")
    script = (INFRA / "event-subscription.sh").read_text()
    assert "--template-file infra/event-subscription.bicep" in script
    queries = re.findall(r'--query "([^"]*blobs_extension[^"]*)"', script)
    assert queries == ["systemKeys.blobs_extension && 'present'"]  # whether it exists, never its value


def logical_lines(script: str) -> list[str]:
    """The script's commands: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", script)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("script", sorted(p.name for p in INFRA.glob("*.sh")))
def test_no_script_puts_a_secret_on_a_command_line(script):
    # Anything in argv is readable by every user of the machine (`ps`, /proc/<pid>/cmdline).
    text = (INFRA / script).read_text()
    az_commands = [line for line in logical_lines(text) if re.search(r"(^|[\s;&|(])az\s", line)]
    assert az_commands, "no az command found: the test would prove nothing"
    for command in az_commands:
        for forbidden in ("SOURCE_HEADERS", "sourceHeaders=", "SOURCE_CLIENT_SECRET", "sourceClientSecret=", "code=",
                          "$key", "${key}"):  # fmt: skip
            assert forbidden not in command, f"{script}: {command.strip()}"
    # The secrets are never expanded by the shell at all: only python3 reads them, from its environment.
    assert not re.search(r"\$\{?(SOURCE_HEADERS|SOURCE_CLIENT_SECRET)", text)
    assert not re.search(r"code=\$\{?\w", text)


@pytest.fixture
def fake_az(tmp_path):
    """A PATH where `az` records its argv (and any @parameters file it is given) and python3 records its
    argv before running the real one. Enough of `az` for deploy.sh and event-subscription.sh."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.jsonl"
    files = tmp_path / "files.jsonl"
    python = shutil.which("python3") or sys.executable
    (bin_dir / "az").write_text(f"""#!{python}
import json, os, stat, sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as out:
    out.write(json.dumps(["az", *args]) + "\\n")
for flag, value in zip(args, args[1:]):
    if flag == "--parameters" and value.startswith("@"):
        with open(value[1:]) as parameters, open({str(files)!r}, "a") as out:
            mode = stat.S_IMODE(os.stat(value[1:]).st_mode)
            out.write(json.dumps({{"mode": mode, "content": json.load(parameters)}}) + "\\n")
if args[:3] == ["deployment", "group", "show"]:
    name = args[args.index("--query") + 1].split(".")[2]
    print({{"AZURE_FUNCTION_APP_NAME": "func-test", "AZURE_EVENT_GRID_TOPIC_NAME": "evgt-test",
           "CHUNK_CONTAINER": "chunks", "EVENT_GRID_DEADLETTER_CONTAINER": "eventgrid-deadletter"}}[name])
if args[:3] == ["functionapp", "keys", "list"]:
    print("present")
""")
    (bin_dir / "python3").write_text(f"""#!/bin/sh
printf '%s\\n' "$*" | {python} -c 'import json, sys; print(json.dumps(["python3", sys.stdin.read()]))' >> {log}
exec {python} "$@"
""")
    for tool in ("az", "python3"):
        (bin_dir / tool).chmod(0o755)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(scratch),
           "SOURCE_URL": "https://api.example.com/ids"}  # fmt: skip
    for name in ("AZURE_RESOURCE_GROUP", "SOURCE_HEADERS", "SOURCE_CLIENT_SECRET", "VNET_ENABLED", "AZURE_LOCATION"):
        env.pop(name, None)

    def run(script: str, *args: str, **extra: str) -> tuple[subprocess.CompletedProcess, list[list[str]], list[dict]]:
        result = subprocess.run([INFRA / script, *args], env={**env, **extra}, capture_output=True, text=True,
                                timeout=120, cwd=tmp_path)  # fmt: skip
        argv = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        passed = [json.loads(line) for line in files.read_text().splitlines()] if files.exists() else []
        assert list(scratch.iterdir()) == [], "the temporary directory outlived the script"
        return result, argv, passed

    return run


def test_deploy_hands_secrets_to_az_in_a_private_file_never_in_argv(fake_az):
    headers = '{"x-api-key": "s3cr3t-value"}'
    result, argv, passed = fake_az("deploy.sh", "fanouttest", "westus3", SOURCE_HEADERS=headers)
    assert result.returncode == 0, result.stderr
    assert not [command for command in argv if "s3cr3t-value" in " ".join(command)]
    assert not [command for command in argv if "code=" in " ".join(command)]
    (parameters,) = passed
    assert parameters["mode"] == stat.S_IRUSR | stat.S_IWUSR  # 600
    assert {name: value["value"] for name, value in parameters["content"]["parameters"].items()} == {
        "name": "fanouttest", "location": "westus3", "sourceUrl": "https://api.example.com/ids",
        "sourceHeaders": headers, "sourceClientSecret": "", "vnetEnabled": False}  # fmt: skip
    (subscription,) = [command for command in argv if "infra/event-subscription.bicep" in command]
    assert (
        "webhookUrl=https://func-test.azurewebsites.net/runtime/webhooks/blobs?functionName=Host.Functions.ingest_chunk"
        in subscription
    )
    assert "deadLetterContainerName=eventgrid-deadletter" in subscription


def test_deploy_refuses_headers_that_are_not_a_json_object_without_echoing_them(fake_az):
    result, argv, _ = fake_az("deploy.sh", "fanouttest", SOURCE_HEADERS="x-api-key: s3cr3t-value")
    assert result.returncode != 0
    assert "SOURCE_HEADERS must be a JSON object" in result.stderr
    assert "s3cr3t-value" not in result.stderr + result.stdout
    assert not [command for command in argv if command[1:4] == ["deployment", "group", "create"]]


def test_azd_post_deploy_hook_creates_the_subscription_from_the_deployment_outputs(fake_az):
    hook = (PROJECT_ROOT / "azure.yaml").read_text()
    assert re.search(
        r"postdeploy:(\n\s+#.*)*\n\s+posix:\n\s+shell: sh\n\s+run: \./infra/event-subscription\.sh\n", hook
    )
    outputs = {"AZURE_RESOURCE_GROUP": "rg-fanouttest", "AZURE_FUNCTION_APP_NAME": "func-test",
               "AZURE_EVENT_GRID_TOPIC_NAME": "evgt-test", "CHUNK_CONTAINER": "chunks",
               "EVENT_GRID_DEADLETTER_CONTAINER": "eventgrid-deadletter"}  # fmt: skip
    result, argv, _ = fake_az("event-subscription.sh", **outputs)  # azd runs hooks with the outputs as variables
    assert result.returncode == 0, result.stderr
    (deployment,) = [command for command in argv if command[1:4] == ["deployment", "group", "create"]]
    assert deployment[deployment.index("--template-file") + 1] == "infra/event-subscription.bicep"
    assert {"systemTopicName=evgt-test", "functionAppName=func-test", "chunkContainerName=chunks",
            "deadLetterContainerName=eventgrid-deadletter"} <= set(deployment)  # fmt: skip
    assert not [command for command in argv if "code=" in " ".join(command)]


def test_extra_queue_accounts_are_made_like_the_main_one_with_a_queue_role_on_each():
    main = parse("main.bicep")
    assert main["parameters"]["queueAccounts"]["default"] == 0
    accounts = main["modules"]["queueStorage"]
    assert accounts["detail"]["path"] == main["modules"]["storage"]["detail"]["path"] == "modules/storage.bicep"
    loop = accounts["config"]["loop_type"]["detail"]["array_name"]["function"]
    assert loop == {"type": "range", "parameters": {"start_index": 0, "count": "queueAccounts"}}
    params = accounts["config"]["config"]["params"]
    assert params["queueNames"] == "queueNames"  # every partition in every account
    assert params["containerNames"] == []  # queues only
    assert params["retentionPrefixes"] == params["claimCheckPrefixes"] == []
    lifecycle = parse("modules/storage.bicep")["resources"]["lifecycle"]["config"]["condition"]
    assert lifecycle == {"operator": {"type": "not", "operands": {"bool_value": {"function": {
        "type": "empty", "parameters": {"item_to_test": "containerNames"}}}}}}  # fmt: skip
    roles = main["modules"]["queueRoles"]
    assert roles["detail"]["path"] == "modules/queue-roles.bicep"
    assert accessor(roles["config"]["config"]["params"]["principalId"]) == "identity.outputs.principalId"
    assert "queueRoles" in main["modules"]["functionApp"]["config"]["dependsOn"]

    queue_roles = parse("modules/queue-roles.bicep")
    role = queue_roles["variables"]["storageQueueDataContributor"]["value"]
    assert role == ROLE_IDS["storageQueueDataContributor"]
    assignment = queue_roles["resources"]["queueRoleAssignment"]["config"]
    assert assignment["scope"] == "storage"
    assert role_id_variable(assignment) == "storageQueueDataContributor"
    assert assignment["properties"]["principalType"] == "ServicePrincipal"


def test_queue_accounts_setting_lists_the_main_account_then_each_extra_queue_endpoint():
    main = parse("main.bicep")
    setting = app_settings_in_bicep()["QUEUE_ACCOUNTS"]["function"]
    assert setting["type"] == "join" and setting["parameters"]["delimiter"] == ","
    listed = setting["parameters"]["input_array"]["function"]["parameters"]
    assert listed == {"arg_1": ["AzureWebJobsStorage"], "arg_2": "queueAccountEndpoints"}
    endpoints = main["variables"]["queueAccountEndpoints"]["value"]
    assert endpoints["loop_type"]["detail"]["array_name"] == "queueAccountNames"
    assert endpoints["config"] == "https://${accountName}.queue.${environment().suffixes.storage}"
    names = main["variables"]["queueAccountNames"]["value"]
    assert names["config"] == "st${take(token, 13)}q${account}"  # at most 18 characters: a valid account name
    name = main["modules"]["queueStorage"]["config"]["config"]["params"]["name"]["operator"]
    assert name == {"type": "index_accessor", "operands": {"operand_1": "queueAccountNames", "operand_2": "account"}}


def test_azd_on_windows_runs_the_powershell_twin_with_the_same_az_calls():
    """pwsh is not on this machine (Debian has no package): the twin is held to the POSIX script's az calls,
    their options and template parameters, and to reading the same deployment outputs."""
    hook = (PROJECT_ROOT / "azure.yaml").read_text()
    assert re.search(r"\n\s+windows:\n\s+shell: pwsh\n\s+run: \./infra/event-subscription\.ps1\n", hook)
    posix = (INFRA / "event-subscription.sh").read_text()
    windows = (INFRA / "event-subscription.ps1").read_text()

    def az_calls(script: str) -> list[tuple[str, ...]]:
        calls = re.findall(r"\baz ((?:[a-z]+ )+)", script)
        return [tuple(call.split()) for call in calls]

    def options(script: str) -> set[str]:
        return set(re.findall(r"(--[a-z-]+|\b\w+Name=|\bwebhookUrl=)", script))

    assert az_calls(windows) == az_calls(posix) == [("functionapp", "keys", "list"), ("deployment", "group", "create")]
    assert options(windows) == options(posix)
    for output in ("AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_APP_NAME", "AZURE_EVENT_GRID_TOPIC_NAME",
                   "CHUNK_CONTAINER", "EVENT_GRID_DEADLETTER_CONTAINER"):  # fmt: skip
        assert output in windows
    assert "functionName=Host.Functions.$ingestionFunction" in windows and "'ingest_chunk'" in windows


def network_resource_types(module_path: str) -> set[str]:
    return {r["type"] for r in parse(module_path)["resources"].values() if r["type"].startswith("Microsoft.Network/")}


def private_endpoint_targets(vnet_enabled: bool, queue_accounts: int, topic: bool = False) -> list[dict[str, Any]]:
    """What main.bicep gives a private endpoint, for this vnetEnabled, this many extra queue accounts and
    runEventsTopic."""
    variables = parse("main.bicep")["variables"]
    queue_account_names = [f"queueAccountNames[{account}]" for account in range(queue_accounts)]
    per_queue_account = evaluate(variables["queueAccountPrivateEndpoints"]["value"],
                                 {"queueAccountNames": queue_account_names})  # fmt: skip
    per_topic = evaluate(variables["runEventsTopicPrivateEndpoints"]["value"], {"runEventsTopic": topic})
    return evaluate(variables["privateEndpointTargets"]["value"],
                    {"vnetEnabled": vnet_enabled, "queueAccountPrivateEndpoints": per_queue_account,
                     "runEventsTopicPrivateEndpoints": per_topic})  # fmt: skip


def test_private_network_is_off_by_default_and_nothing_network_related_is_deployed_without_it():
    main = parse("main.bicep")
    assert main["parameters"]["vnetEnabled"]["type"] == "bool"
    assert main["parameters"]["vnetEnabled"]["default"] is False
    # Every module that declares a network resource is deployed only with vnetEnabled: the network by its
    # condition, the private endpoints by looping over targets that are empty without it.
    declaring = {name for name, module in main["modules"].items() if network_resource_types(module["detail"]["path"])}
    assert declaring == {"network", "privateEndpoints"}
    assert main["modules"]["network"]["config"]["condition"] == "vnetEnabled"
    endpoints = main["modules"]["privateEndpoints"]["config"]
    assert endpoints["loop_type"]["detail"]["array_name"] == "privateEndpointTargets"
    for queue_accounts in (0, 3):
        for topic in (False, True):
            assert private_endpoint_targets(False, queue_accounts, topic) == []
    # Without it, public access stays as it was and the app has no integration subnet.
    for path, resource in (("modules/storage.bicep", "storage"), ("modules/key-vault.bicep", "vault")):
        properties = config(path, resource)["properties"]
        assert evaluate(properties["publicNetworkAccess"], {"vnetEnabled": False}) == "Enabled"
        assert evaluate(properties["networkAcls"], {"vnetEnabled": False}) == {
            "bypass": "AzureServices", "defaultAction": "Allow"}  # fmt: skip
    subnet = main["modules"]["functionApp"]["config"]["params"]["virtualNetworkSubnetId"]
    assert evaluate(subnet, {"vnetEnabled": False}) == ""
    site = config("modules/function-app.bicep", "functionApp")["properties"]
    assert evaluate(site["virtualNetworkSubnetId"], {"virtualNetworkSubnetId": ""}) is None  # property left out


def test_private_network_closes_every_storage_account_and_the_key_vault_to_the_public():
    main = parse("main.bicep")["modules"]
    for module in ("storage", "queueStorage", "keyVault"):
        params = main[module]["config"].get("config", main[module]["config"])["params"]
        assert params["vnetEnabled"] == "vnetEnabled", module
    for path, resource in (("modules/storage.bicep", "storage"), ("modules/key-vault.bicep", "vault")):
        properties = config(path, resource)["properties"]
        assert evaluate(properties["publicNetworkAccess"], {"vnetEnabled": True}) == "Disabled"
        # Trusted Azure services keep their exception (Event Grid writes dead letters with its identity).
        assert evaluate(properties["networkAcls"], {"vnetEnabled": True}) == {
            "bypass": "AzureServices", "defaultAction": "Deny"}  # fmt: skip
        assert "ipRules" not in properties["networkAcls"]


@pytest.mark.parametrize("queue_accounts", [0, 1, 5])
def test_private_network_gives_every_account_and_the_vault_an_endpoint_per_sub_resource(queue_accounts):
    main = parse("main.bicep")
    targets = private_endpoint_targets(True, queue_accounts)
    by_name = {target["name"]: target for target in targets}
    assert len(by_name) == len(targets) == 2 + queue_accounts  # one entry per resource
    # The names are the ones the storage and Key Vault modules deploy under, so the IDs match.
    modules = main["modules"]
    assert modules["storage"]["config"]["params"]["name"] == "storageAccountName"
    assert modules["keyVault"]["config"]["params"]["name"] == "keyVaultName"
    assert modules["queueStorage"]["config"]["config"]["params"]["name"]["operator"]["operands"] == {
        "operand_1": "queueAccountNames", "operand_2": "account"}  # fmt: skip
    storage = "Microsoft.Storage/storageAccounts"
    assert by_name.pop("storageAccountName") == {"name": "storageAccountName", "type": storage,
                                                 "groupIds": ["blob", "queue", "table"]}  # fmt: skip
    assert by_name.pop("keyVaultName") == {"name": "keyVaultName", "type": "Microsoft.KeyVault/vaults",
                                           "groupIds": ["vault"]}  # fmt: skip
    assert by_name == {f"queueAccountNames[{n}]": {"name": f"queueAccountNames[{n}]", "type": storage,
                                                   "groupIds": ["queue"]} for n in range(queue_accounts)}  # fmt: skip
    endpoints = modules["privateEndpoints"]["config"]
    assert endpoints["config"]["dependsOn"] == ["storage", "queueStorage", "keyVault", "runEventsTopicModule"]
    params = endpoints["config"]["params"]
    target = targets[-1]
    assert evaluate(params["groupIds"], {"target": target}) == target["groupIds"]
    assert params["targetId"]["function"]["parameters"]["resource_type"]["operator"]["operands"] == {
        "operand_1": "target", "operand_2": "type"}  # fmt: skip
    assert accessor(params["subnetId"]) == "network.outputs.privateEndpointSubnetId"
    assert accessor(params["dnsZoneIds"]) == "network.outputs.dnsZoneIds"
    assert "privateEndpoints" in modules["functionApp"]["config"]["dependsOn"]  # the app starts once they answer


def test_each_private_endpoint_registers_in_the_privatelink_zone_of_its_sub_resource():
    module = parse("modules/private-endpoints.bicep")["resources"]
    endpoints = module["endpoints"]["config"]
    assert endpoints["loop_type"]["detail"] == {"item_name": "groupId", "array_name": "groupIds"}
    names = {"groupId": "queue", "name": "stx", "subnetId": "SUBNET", "targetId": "ACCOUNT", "location": "here",
             "tags": {}}  # fmt: skip
    endpoint = evaluate(endpoints["config"], names)
    assert endpoint["properties"]["subnet"] == {"id": "SUBNET"}
    (connection,) = endpoint["properties"]["privateLinkServiceConnections"]
    assert connection["properties"] == {"privateLinkServiceId": "ACCOUNT", "groupIds": ["queue"]}
    groups = module["zoneGroups"]["config"]
    assert groups["loop_type"]["detail"] == {"item_name": "groupId", "index_name": "index", "array_name": "groupIds"}
    assert groups["config"]["parent"]["operator"]["operands"] == {"operand_1": "endpoints", "operand_2": "index"}
    zone_ids = {"blob": "BLOB-ZONE", "queue": "QUEUE-ZONE", "table": "TABLE-ZONE", "vault": "VAULT-ZONE"}
    (zone,) = groups["config"]["properties"]["privateDnsZoneConfigs"]
    assert zone["properties"]["privateDnsZoneId"]["operator"] == {
        "type": "index_accessor", "operands": {"operand_1": "dnsZoneIds", "operand_2": "groupId"}}  # fmt: skip
    assert set(zone_ids) | {"topic"} >= {g for t in private_endpoint_targets(True, 1, True) for g in t["groupIds"]}

    network = parse("modules/network.bicep")
    zone_names = network["variables"]["zoneNames"]["value"]
    assert zone_names == {
        "blob": "privatelink.blob.${environment().suffixes.storage}",
        "queue": "privatelink.queue.${environment().suffixes.storage}",
        "table": "privatelink.table.${environment().suffixes.storage}",
        "vault": "privatelink.vaultcore.azure.net",
        "topic": "privatelink.eventgrid.azure.net",
    }
    # One zone per sub-resource, each linked to the network, and its ID handed out under that sub-resource;
    # the topic's zone only with the run-events topic.
    for topic in (False, True):
        listed = evaluate(network["variables"]["zones"]["value"], {"zoneNames": zone_names, "runEventsTopic": topic})
        assert sorted(listed) == sorted(name for group, name in zone_names.items() if topic or group != "topic")
    assert parse("main.bicep")["modules"]["network"]["config"]["config"]["params"]["runEventsTopic"] == "runEventsTopic"
    zones = network["resources"]["privateZones"]["config"]
    assert zones["loop_type"]["detail"]["array_name"] == "zones"
    assert evaluate(zones["config"], {"zone": "Z", "tags": {}}) == {"name": "Z", "location": "global", "tags": {}}
    links = network["resources"]["zoneLinks"]["config"]
    assert links["loop_type"]["detail"] == {"item_name": "zone", "index_name": "index", "array_name": "zones"}
    assert links["config"]["parent"]["operator"]["operands"] == {"operand_1": "privateZones", "operand_2": "index"}
    assert accessor(links["config"]["properties"]["virtualNetwork"]["id"]) == "vnet.id"
    assert links["config"]["properties"]["registrationEnabled"] is False
    output = network["outputs"]["dnsZoneIds"]["value"]
    assert set(output) == set(zone_names)
    for group_id, zone_id in output.items():
        parameters = zone_id["function"]["parameters"]
        assert parameters["resource_type"] == "Microsoft.Network/privateDnsZones"
        assert accessor(parameters["resource_name_1"]) == f"zoneNames.{group_id}"


def test_the_app_integrates_with_a_subnet_delegated_to_flex_consumption():
    network = parse("modules/network.bicep")
    subnets = {s["name"]: s["properties"] for s in network["resources"]["vnet"]["config"]["properties"]["subnets"]}
    variables = {name: spec["value"] for name, spec in network["variables"].items()}
    app_subnet = subnets["appSubnetName"]
    assert [d["properties"]["serviceName"] for d in app_subnet["delegations"]] == ["Microsoft.App/environments"]
    assert "delegations" not in subnets["privateEndpointSubnetName"]
    assert variables["appSubnetName"] != variables["privateEndpointSubnetName"]
    output = network["outputs"]["appSubnetId"]["value"]["function"]["parameters"]
    assert output["resource_name_2"] == "appSubnetName"
    main = parse("main.bicep")["modules"]["functionApp"]["config"]["params"]["virtualNetworkSubnetId"]
    assert main["operator"]["operands"]["condition"] == "vnetEnabled"
    assert accessor(main["operator"]["operands"]["true_value"]) == "network.outputs.appSubnetId"
    site = config("modules/function-app.bicep", "functionApp")["properties"]
    assert evaluate(site["virtualNetworkSubnetId"], {"virtualNetworkSubnetId": "SUBNET"}) == "SUBNET"
    # Inbound stays public: Event Grid delivers to the app's webhook, callers reach its HTTPS API.
    assert "publicNetworkAccess" not in site


def test_deploy_with_the_private_network_registers_microsoft_app_and_hands_over_the_client_secret(fake_az):
    result, argv, passed = fake_az("deploy.sh", "fanouttest", VNET_ENABLED="true", SOURCE_CLIENT_SECRET="cl13nt-s3cr3t")
    assert result.returncode == 0, result.stderr
    assert ["az", "provider", "register", "--namespace", "Microsoft.App", "--wait", "--output", "none"] in argv
    assert not [command for command in argv if "cl13nt-s3cr3t" in " ".join(command)]
    (parameters,) = passed
    values = {name: value["value"] for name, value in parameters["content"]["parameters"].items()}
    assert (values["vnetEnabled"], values["sourceClientSecret"]) == (True, "cl13nt-s3cr3t")
    azd = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert azd["vnetEnabled"] == {"value": "${VNET_ENABLED=false}"}  # azd: off unless the environment says


def test_deploy_refuses_a_vnet_enabled_that_is_not_true_or_false(fake_az):
    result, argv, _ = fake_az("deploy.sh", "fanouttest", VNET_ENABLED="yes")
    assert result.returncode != 0
    assert "VNET_ENABLED must be true or false, not 'yes'" in result.stderr
    assert not [command for command in argv if command[1:4] == ["deployment", "group", "create"]]
    assert not [command for command in argv if command[1:3] == ["provider", "register"]]
