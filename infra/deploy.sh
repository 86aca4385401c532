#!/usr/bin/env bash
# One command from nothing to a running app: resource group, Bicep deployment, code, Event Grid
# subscription. Idempotent: run it again to update. Needs the Azure CLI (`az login` first) and python3.
#
#   SOURCE_URL=https://api.example.com/ids infra/deploy.sh NAME [LOCATION]
set -euo pipefail

NAME="${1:?usage: SOURCE_URL=https://… infra/deploy.sh NAME [LOCATION]}"
LOCATION="${2:-${AZURE_LOCATION:-eastus2}}"
: "${SOURCE_URL:?set SOURCE_URL to the source API the app reads}"
export AZURE_RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-rg-${NAME}}"
cd "$(dirname "$0")/.."

echo "1/4 resource group ${AZURE_RESOURCE_GROUP} in ${LOCATION}" >&2
az group create --name "$AZURE_RESOURCE_GROUP" --location "$LOCATION" --tags "azd-env-name=${NAME}" --output none

echo "2/4 infrastructure (infra/main.bicep)" >&2
az deployment group create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "$NAME" \
  --template-file infra/main.bicep \
  --parameters infra/main.parameters.json \
  --parameters name="$NAME" location="$LOCATION" sourceUrl="$SOURCE_URL" sourceHeaders="${SOURCE_HEADERS:-}" \
  --output none
output() {
  az deployment group show --resource-group "$AZURE_RESOURCE_GROUP" --name "$NAME" \
    --query "properties.outputs.$1.value" --output tsv
}
AZURE_FUNCTION_APP_NAME="$(output AZURE_FUNCTION_APP_NAME)"
AZURE_EVENT_GRID_TOPIC_NAME="$(output AZURE_EVENT_GRID_TOPIC_NAME)"
CHUNK_CONTAINER="$(output CHUNK_CONTAINER)"
export AZURE_FUNCTION_APP_NAME AZURE_EVENT_GRID_TOPIC_NAME CHUNK_CONTAINER

echo "3/4 code → ${AZURE_FUNCTION_APP_NAME} (remote build installs requirements.txt)" >&2
package="$(mktemp -d)/app.zip"
python3 -m zipfile -c "$package" function_app.py host.json requirements.txt core putmessage chunking ingestion api
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
