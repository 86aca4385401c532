# The same as event-subscription.sh, for azd on Windows (its postdeploy hook runs this with pwsh): subscribes
# the blob trigger to BlobCreated events on the chunk container, with retries and a dead-letter container.
# Reads AZURE_RESOURCE_GROUP, AZURE_FUNCTION_APP_NAME, AZURE_EVENT_GRID_TOPIC_NAME, CHUNK_CONTAINER and
# EVENT_GRID_DEADLETTER_CONTAINER from the environment (azd sets them from the deployment's outputs).
# The blobs_extension key never passes through this script: infra/event-subscription.bicep reads it
# inside Azure (listKeys); this script only waits until the key exists.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

foreach ($name in 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'AZURE_EVENT_GRID_TOPIC_NAME') {
    if (-not [Environment]::GetEnvironmentVariable($name)) { throw "set $name" }
}
$resourceGroup = $env:AZURE_RESOURCE_GROUP
$functionApp = $env:AZURE_FUNCTION_APP_NAME
$topic = $env:AZURE_EVENT_GRID_TOPIC_NAME
$chunkContainer = if ($env:CHUNK_CONTAINER) { $env:CHUNK_CONTAINER } else { 'chunks' }
$deadLetters = if ($env:EVENT_GRID_DEADLETTER_CONTAINER) { $env:EVENT_GRID_DEADLETTER_CONTAINER } else { 'eventgrid-deadletter' }
$ingestionFunction = 'ingest_chunk'  # the blob trigger's name in function_app.py
Set-Location (Join-Path $PSScriptRoot '..')

# Asks only whether the key exists ("present" or nothing): its value is never printed or held here.
$ready = ''
foreach ($attempt in 1..30) {
    $ready = az functionapp keys list --resource-group $resourceGroup --name $functionApp `
        --query "systemKeys.blobs_extension && 'present'" --output tsv 2>$null
    if ($ready -eq 'present') { break }
    Write-Host "waiting for the blobs_extension key (attempt $attempt/30)..."
    Start-Sleep -Seconds 10
}
if ($ready -ne 'present') {
    throw "no blobs_extension key on $functionApp; is the code deployed and the app running?"
}

# The webhook without its key; the template appends &code=<blobs_extension key> inside Azure.
$webhook = "https://$functionApp.azurewebsites.net/runtime/webhooks/blobs?functionName=Host.Functions.$ingestionFunction"
az deployment group create `
    --resource-group $resourceGroup `
    --name event-subscription `
    --template-file infra/event-subscription.bicep `
    --parameters systemTopicName=$topic functionAppName=$functionApp `
    webhookUrl=$webhook chunkContainerName=$chunkContainer `
    deadLetterContainerName=$deadLetters `
    --output none
if ($LASTEXITCODE -ne 0) { throw "the subscription's deployment failed (exit code $LASTEXITCODE)" }
Write-Host "Event Grid subscription chunk-created → $ingestionFunction is in place (dead letters: $deadLetters)."
