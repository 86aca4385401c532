#!/usr/bin/env bash
# Subscribes the blob trigger to BlobCreated events on the chunk container, with retries and a dead-letter
# container. Run after the code is deployed: the webhook needs the blobs_extension system key, which the
# host creates on its first start.
# Reads AZURE_RESOURCE_GROUP, AZURE_FUNCTION_APP_NAME, AZURE_EVENT_GRID_TOPIC_NAME, CHUNK_CONTAINER and
# EVENT_GRID_DEADLETTER_CONTAINER (azd sets them from the deployment's outputs; infra/deploy.sh exports
# them). Safe to run again: the subscription is an ARM deployment (a PUT), updated in place.
#
# The key never passes through this script: infra/event-subscription.bicep reads it inside Azure
# (listKeys) while Resource Manager deploys it, so it is on no command line (`ps`), in no file and in no
# deployment parameter. This script only waits until the key exists.
set -euo pipefail

: "${AZURE_RESOURCE_GROUP:?set AZURE_RESOURCE_GROUP}"
: "${AZURE_FUNCTION_APP_NAME:?set AZURE_FUNCTION_APP_NAME}"
: "${AZURE_EVENT_GRID_TOPIC_NAME:?set AZURE_EVENT_GRID_TOPIC_NAME}"
CHUNK_CONTAINER="${CHUNK_CONTAINER:-chunks}"
EVENT_GRID_DEADLETTER_CONTAINER="${EVENT_GRID_DEADLETTER_CONTAINER:-eventgrid-deadletter}"
INGESTION_FUNCTION="ingest_chunk" # the blob trigger's name in function_app.py
cd "$(dirname "$0")/.."

# Asks only whether the key exists ("present" or nothing): its value is never printed or held here.
ready=""
for attempt in $(seq 1 30); do
  ready=$(az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
    --query "systemKeys.blobs_extension && 'present'" --output tsv 2>/dev/null || true)
  [ "$ready" = "present" ] && break
  echo "waiting for the blobs_extension key (attempt $attempt/30)..." >&2
  sleep 10
done
if [ "$ready" != "present" ]; then
  echo "error: no blobs_extension key on $AZURE_FUNCTION_APP_NAME; is the code deployed and the app running?" >&2
  exit 1
fi

# The webhook without its key; the template appends &code=<blobs_extension key> inside Azure.
webhook="https://${AZURE_FUNCTION_APP_NAME}.azurewebsites.net/runtime/webhooks/blobs?functionName=Host.Functions.${INGESTION_FUNCTION}"
az deployment group create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name event-subscription \
  --template-file infra/event-subscription.bicep \
  --parameters systemTopicName="$AZURE_EVENT_GRID_TOPIC_NAME" functionAppName="$AZURE_FUNCTION_APP_NAME" \
  webhookUrl="$webhook" chunkContainerName="$CHUNK_CONTAINER" \
  deadLetterContainerName="$EVENT_GRID_DEADLETTER_CONTAINER" \
  --output none
echo "Event Grid subscription chunk-created → ${INGESTION_FUNCTION} is in place" \
  "(dead letters: ${EVENT_GRID_DEADLETTER_CONTAINER})." >&2
