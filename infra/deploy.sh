#!/usr/bin/env bash
# One command from nothing to a running app: resource group, Bicep deployment, code, Event Grid
# subscription. Idempotent: run it again to update. Needs the Azure CLI (`az login` first) and python3.
#
#   SOURCE_URL=https://api.example.com/ids infra/deploy.sh NAME [LOCATION]
#
# SOURCE_HEADERS (optional, a JSON object such as {"x-api-key": "…"}) and SOURCE_CLIENT_SECRET (optional,
# the source token endpoint's OAuth2 client secret) are read from the environment and handed to `az` in a
# parameters file (mode 600, in a private temporary directory removed on exit), never on a command line,
# where any user could read it with `ps`. The template stores them in Key Vault.
# SOURCE_AUTH, SOURCE_TOKEN_URL, SOURCE_CLIENT_ID and SOURCE_SCOPE (optional, docs/sources.md Authentication)
# pass through as they are. VNET_ENABLED=true deploys the private network (main.bicep `vnetEnabled`; docs/deploy.md, Private network).
set -euo pipefail

NAME="${1:?usage: SOURCE_URL=https://… infra/deploy.sh NAME [LOCATION]}"
LOCATION="${2:-${AZURE_LOCATION:-eastus2}}"
: "${SOURCE_URL:?set SOURCE_URL to the source API the app reads}"
export AZURE_RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-rg-${NAME}}"
cd "$(dirname "$0")/.."
workdir="$(mktemp -d)" # mode 700: this user's only
trap 'rm -rf "$workdir"' EXIT

echo "1/4 resource group ${AZURE_RESOURCE_GROUP} in ${LOCATION}" >&2
az group create --name "$AZURE_RESOURCE_GROUP" --location "$LOCATION" --tags "azd-env-name=${NAME}" --output none
if [ "${VNET_ENABLED:-false}" = "true" ]; then
  # Flex Consumption's integration subnet is delegated to Microsoft.App/environments: the provider must be there.
  az provider register --namespace Microsoft.App --wait --output none
fi

echo "2/4 infrastructure (infra/main.bicep)" >&2
parameters="$workdir/main.parameters.json"
# The values travel to python3 in its environment and to az in the file; the file is created 600.
NAME="$NAME" LOCATION="$LOCATION" SOURCE_URL="$SOURCE_URL" python3 - "$parameters" <<'PY'
import json, os, sys

headers = os.environ.get("SOURCE_HEADERS", "")
try:
    parsed = json.loads(headers) if headers else {}
except ValueError:
    parsed = None
if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
    # The app would refuse it at its first run; never echo the value: it holds a secret.
    sys.exit('error: SOURCE_HEADERS must be a JSON object of strings, e.g. {"x-api-key": "..."}, or unset')
vnet = os.environ.get("VNET_ENABLED", "false")
if vnet not in ("true", "false"):
    sys.exit(f"error: VNET_ENABLED must be true or false, not {vnet!r}")
values = {
    "name": os.environ["NAME"],
    "location": os.environ["LOCATION"],
    "sourceUrl": os.environ["SOURCE_URL"],
    "sourceHeaders": headers,
    "sourceClientSecret": os.environ.get("SOURCE_CLIENT_SECRET", ""),
    "vnetEnabled": vnet == "true",
    **{
        parameter: os.environ[setting]
        for setting, parameter in (("SOURCE_AUTH", "sourceAuth"), ("SOURCE_TOKEN_URL", "sourceTokenUrl"),
                                   ("SOURCE_CLIENT_ID", "sourceClientId"), ("SOURCE_SCOPE", "sourceScope"))
        if os.environ.get(setting)
    },
}
document = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {key: {"value": value} for key, value in values.items()},
}
with os.fdopen(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
    json.dump(document, file)
PY
# Later parameters override earlier ones: the file's values win over main.parameters.json's azd placeholders.
az deployment group create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "$NAME" \
  --template-file infra/main.bicep \
  --parameters infra/main.parameters.json \
  --parameters @"$parameters" \
  --output none
rm -f "$parameters"
output() {
  az deployment group show --resource-group "$AZURE_RESOURCE_GROUP" --name "$NAME" \
    --query "properties.outputs.$1.value" --output tsv
}
AZURE_FUNCTION_APP_NAME="$(output AZURE_FUNCTION_APP_NAME)"
AZURE_EVENT_GRID_TOPIC_NAME="$(output AZURE_EVENT_GRID_TOPIC_NAME)"
CHUNK_CONTAINER="$(output CHUNK_CONTAINER)"
EVENT_GRID_DEADLETTER_CONTAINER="$(output EVENT_GRID_DEADLETTER_CONTAINER)"
export AZURE_FUNCTION_APP_NAME AZURE_EVENT_GRID_TOPIC_NAME CHUNK_CONTAINER EVENT_GRID_DEADLETTER_CONTAINER

# The package goes to the app's SCM endpoint (public, Entra ID), which writes it into the deployment container
# on the app's behalf; with VNET_ENABLED=true that container is reached through the app's virtual network.
echo "3/4 code → ${AZURE_FUNCTION_APP_NAME} (remote build installs requirements.txt)" >&2
package="$workdir/app.zip"
python3 -m zipfile -c "$package" function_app.py host.json requirements.txt core putmessage chunking ingestion runs api
az functionapp deployment source config-zip \
  --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
  --src "$package" --build-remote true --output none

echo "4/4 Event Grid subscription for the blob trigger" >&2
infra/event-subscription.sh

cat <<DONE

Deployed. Start an ingestion (the function key comes from the second command):

  key=\$(az functionapp function keys list -g ${AZURE_RESOURCE_GROUP} -n ${AZURE_FUNCTION_APP_NAME} \\
        --function-name start_ingestion --query default -o tsv)
  curl -i -X POST "https://${AZURE_FUNCTION_APP_NAME}.azurewebsites.net/api/ingestions?code=\$key" \\
       -H 'Content-Type: application/json' -d '{}'
DONE
