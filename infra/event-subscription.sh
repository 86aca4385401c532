#!/usr/bin/env bash
# Subscribes the blob trigger to BlobCreated events on the chunk container. Run after the code is
# deployed: the webhook needs the blobs_extension system key, which the host creates on its first start.
# Reads AZURE_RESOURCE_GROUP, AZURE_FUNCTION_APP_NAME, AZURE_EVENT_GRID_TOPIC_NAME and CHUNK_CONTAINER
# (azd sets them from the deployment's outputs; infra/deploy.sh exports them). Safe to run again.
set -euo pipefail

: "${AZURE_RESOURCE_GROUP:?set AZURE_RESOURCE_GROUP}"
: "${AZURE_FUNCTION_APP_NAME:?set AZURE_FUNCTION_APP_NAME}"
: "${AZURE_EVENT_GRID_TOPIC_NAME:?set AZURE_EVENT_GRID_TOPIC_NAME}"
CHUNK_CONTAINER="${CHUNK_CONTAINER:-chunks}"
INGESTION_FUNCTION="ingest_chunk" # the blob trigger's name in function_app.py

key=""
for attempt in $(seq 1 30); do
  key=$(az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
    --query "systemKeys.blobs_extension" --output tsv 2>/dev/null || true)
  [ -n "$key" ] && break
  echo "waiting for the blobs_extension key (attempt $attempt/30)..." >&2
  sleep 10
done
if [ -z "$key" ]; then
  echo "error: no blobs_extension key on $AZURE_FUNCTION_APP_NAME; is the code deployed and the app running?" >&2
  exit 1
fi

endpoint="https://${AZURE_FUNCTION_APP_NAME}.azurewebsites.net/runtime/webhooks/blobs?functionName=Host.Functions.${INGESTION_FUNCTION}&code=${key}"
az eventgrid system-topic event-subscription create \
  --name chunk-created \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --system-topic-name "$AZURE_EVENT_GRID_TOPIC_NAME" \
  --endpoint "$endpoint" \
  --endpoint-type webhook \
  --included-event-types Microsoft.Storage.BlobCreated \
  --subject-begins-with "/blobServices/default/containers/${CHUNK_CONTAINER}/" \
  --max-delivery-attempts 30 \
  --event-ttl 1440 \
  --output none
echo "Event Grid subscription chunk-created → ${INGESTION_FUNCTION} is in place." >&2
