// The fan-out app in one resource group: storage (no shared keys), a user-assigned identity with
// least-privilege roles, a Key Vault (RBAC) for the source's secrets, Application Insights, a Flex
// Consumption function app (no basic publishing credentials), and the Event Grid system topic its blob
// trigger listens through (the subscription itself: infra/event-subscription.bicep, after the code is
// deployed). With `vnetEnabled`, also a virtual network that the app's outbound traffic goes through and
// private endpoints for every storage account and the Key Vault, whose public endpoints are then closed.
// Deploy with infra/deploy.sh or `azd up`.
targetScope = 'resourceGroup'

@minLength(3)
@maxLength(20)
@description('Environment name: part of every resource name.')
param name string

@description('Region for every resource (Flex Consumption must be available there).')
param location string = resourceGroup().location

@description('The source API the chunking function reads (the operator sets it; callers never can).')
param sourceUrl string

@secure()
@description('JSON object of headers for the source, e.g. an API key. Empty for none. Stored as a Key Vault secret; the app setting holds only a reference to it.')
param sourceHeaders string = ''

@secure()
@description('The OAuth2 client secret of the source\'s token endpoint (SOURCE_CLIENT_SECRET). Empty for none. Stored as a Key Vault secret; the app setting holds only a reference to it.')
param sourceClientSecret string = ''

@allowed(['none', 'oauth2-client-credentials', 'entra'])
@description('How the app signs in to the source (SOURCE_AUTH): none, OAuth2 client credentials at sourceTokenUrl, or entra (the app\'s managed identity, a token for sourceScope).')
param sourceAuth string = 'none'

@description('oauth2-client-credentials: the token endpoint (SOURCE_TOKEN_URL).')
param sourceTokenUrl string = ''

@description('oauth2-client-credentials: the client id (SOURCE_CLIENT_ID).')
param sourceClientId string = ''

@description('The scope asked for (SOURCE_SCOPE); required for entra, e.g. api://<app-id>/.default.')
param sourceScope string = ''

@description('Private network: a virtual network with the app\'s integration subnet, private endpoints and private DNS zones for the storage accounts (blob, queue, table; queue on each queueAccounts account) the Key Vault and the run-events topic (runEventsTopic), whose public network access is then off. The app itself stays reachable over HTTPS (Event Grid delivers to its webhook). See docs/deploy.md, Private network.')
param vnetEnabled bool = false

param pythonVersion string = '3.11'
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

param chunkContainerName string = 'chunks'
param runsContainerName string = 'ingestion-runs'
param largeMessageContainerName string = 'large-messages'
@description('Blob container where Event Grid dead-letters the chunk events it could not deliver.')
param deadLetterContainerName string = 'eventgrid-deadletter'
param queueName string = 'ingest'
@minValue(1)
@maxValue(100)
param queuePartitions int = 1
@description('Extra storage accounts for the target queues (past one account\'s 20,000 requests/s): each made like the main one (the same storage module: no shared keys, TLS 1.2, HTTPS only), holding every partition, the identity a queue role on it. QUEUE_ACCOUNTS then lists the main account and these.')
@minValue(0)
@maxValue(49)
param queueAccounts int = 0
param chunkSize int = 5000
@allowed(['base64', 'none'])
param queueMessageEncoding string = 'base64'
@description('Message time-to-live in seconds; -1 = never expires; empty = the service default (7 days).')
param queueMessageTtl string = ''
@description('Seconds a new message stays invisible to consumers; 0 = visible at once; less than the TTL.')
@minValue(0)
@maxValue(604800)
param queueMessageVisibilityTimeout int = 0
param ingestConcurrency int = 64
@description('Days a run\'s chunk blobs, record and statuses stay after their last change before the storage lifecycle rule deletes them.')
@minValue(1)
param retentionDays int = 7
@description('Days a claim-check blob stays: keep it at least the messages\' time-to-live in days (7 by default).')
@minValue(1)
param claimCheckRetentionDays int = 7
// The claim-check rule follows the messages' TTL: off when they never expire (-1), else never sooner than
// the TTL (rounded up to whole days), whatever claimCheckRetentionDays says.
var messageTtlSeconds = empty(queueMessageTtl) ? 604800 : int(queueMessageTtl)
var claimCheckDays = (messageTtlSeconds == -1) ? 0 : max(claimCheckRetentionDays, (messageTtlSeconds + 86399) / 86400)
@description('Chunk invocations ingesting one run at once unless the request says (max_concurrency); 0 = no cap.')
@minValue(0)
@maxValue(1000)
param runMaxConcurrency int = 0
@description('NCRONTAB schedule of the sweeper (second minute hour day month weekday).')
@description('Create an Event Grid topic for the runs\' completion events (CloudEvents, Entra only) and send each one there too, with the app identity as EventGrid Data Sender on it.')
param runEventsTopic bool = false
@description('Or a URL of your own that receives them (RUN_EVENTS_WEBHOOK); empty: none. Ignored with runEventsTopic.')
@secure()
param runEventsWebhook string = ''
param sweepSchedule string = '0 */5 * * * *'
param controlQueueName string = 'chunking-continuations'
@description('Seconds the HTTP function chunks before it answers and hands the rest to the control queue.')
param chunkingTimeBudget int = 60

@description('How the source pages (see the README): none, next-link, cursor or page.')
@allowed(['none', 'next-link', 'cursor', 'page'])
param sourcePagination string = 'none'
param sourceItemsPath string = ''
param sourceNextPath string = ''
param sourceCursorPath string = 'next_cursor'
param sourceCursorParam string = 'cursor'
param sourcePageParam string = 'page'
param sourcePageSizeParam string = 'per_page'
param sourcePageSize int = 1000
param sourceFirstPage int = 1

var token = toLower(uniqueString(subscription().id, resourceGroup().id, name))
var tags = { 'azd-env-name': name, app: 'azure-queue-fanout' }
var deploymentContainerName = 'app-package-${take(token, 8)}'
var storageAccountName = 'st${take(token, 13)}fan'
var keyVaultName = 'kv${take(token, 13)}fan'
var runEventsTopicName = 'evgt-runs-${name}-${take(token, 6)}'
// Names and queue endpoints of the extra queue accounts, known before deployment (a loop variable may not
// read module outputs).
var queueAccountNames = [for account in range(0, queueAccounts): 'st${take(token, 13)}q${account}']
var queueAccountEndpoints = [for accountName in queueAccountNames: 'https://${accountName}.queue.${environment().suffixes.storage}']
// What gets a private endpoint with the private network, and for which sub-resources: the main account
// (the host and the app use blob, queue and table), each extra queue account (queue only), the Key Vault
// and the run-events topic when there is one (the app posts its events there).
// Names are known before deployment, so the resource IDs are too.
var queueAccountPrivateEndpoints = [for accountName in queueAccountNames: {
  name: accountName
  type: 'Microsoft.Storage/storageAccounts'
  groupIds: ['queue']
}]
var runEventsTopicPrivateEndpoints = runEventsTopic ? [
  {
    name: runEventsTopicName
    type: 'Microsoft.EventGrid/topics'
    groupIds: ['topic']
  }
] : []
var privateEndpointTargets = vnetEnabled ? concat([
  {
    name: storageAccountName
    type: 'Microsoft.Storage/storageAccounts'
    groupIds: ['blob', 'queue', 'table']
  }
  {
    name: keyVaultName
    type: 'Microsoft.KeyVault/vaults'
    groupIds: ['vault']
  }
], queueAccountPrivateEndpoints, runEventsTopicPrivateEndpoints) : []
var queueNames = [for partition in range(0, queuePartitions): queuePartitions == 1 ? queueName : '${queueName}-${partition}']

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-${name}-${take(token, 6)}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageAccountName
    location: location
    tags: tags
    vnetEnabled: vnetEnabled
    containerNames: [
      chunkContainerName
      runsContainerName
      largeMessageContainerName
      deploymentContainerName
      deadLetterContainerName
    ]
    queueNames: concat(queueNames, [controlQueueName])
    retentionPrefixes: [
      '${chunkContainerName}/'
      '${runsContainerName}/'
    ]
    retentionDays: retentionDays
    claimCheckPrefixes: [
      '${largeMessageContainerName}/'
    ]
    claimCheckRetentionDays: claimCheckDays
  }
}

module queueStorage 'modules/storage.bicep' = [
  for account in range(0, queueAccounts): {
    name: 'queue-storage-${account}'
    params: {
      name: queueAccountNames[account]
      location: location
      tags: tags
      containerNames: []
      queueNames: queueNames
      retentionPrefixes: []
      claimCheckPrefixes: []
      vnetEnabled: vnetEnabled
    }
  }
]

module queueRoles 'modules/queue-roles.bicep' = [
  for account in range(0, queueAccounts): {
    name: 'queue-roles-${account}'
    params: {
      storageAccountName: queueStorage[account].outputs.name
      principalId: identity.outputs.principalId
    }
  }
]

module keyVault 'modules/key-vault.bicep' = {
  name: 'key-vault'
  params: {
    name: keyVaultName
    location: location
    tags: tags
    sourceHeaders: sourceHeaders
    sourceClientSecret: sourceClientSecret
    vnetEnabled: vnetEnabled
  }
}

module network 'modules/network.bicep' = if (vnetEnabled) {
  name: 'network'
  params: {
    name: 'vnet-${name}-${take(token, 6)}'
    location: location
    tags: tags
    runEventsTopic: runEventsTopic
  }
}

module privateEndpoints 'modules/private-endpoints.bicep' = [
  for target in privateEndpointTargets: {
    name: 'private-endpoints-${target.name}'
    dependsOn: [storage, queueStorage, keyVault, runEventsTopicModule]
    params: {
      name: target.name
      location: location
      tags: tags
      targetId: resourceId(target.type, target.name)
      groupIds: target.groupIds
      subnetId: network.outputs.privateEndpointSubnetId
      dnsZoneIds: network.outputs.dnsZoneIds
    }
  }
]

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    name: '${name}-${take(token, 6)}'
    location: location
    tags: tags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    principalId: identity.outputs.principalId
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  // With the private network, the app starts only once storage and Key Vault answer at their private addresses.
  dependsOn: [roles, queueRoles, privateEndpoints]
  params: {
    name: 'func-${name}-${take(token, 6)}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.connectionString
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    appSettings: {
      SOURCE_URL: sourceUrl
      // A Key Vault reference, resolved by the platform with the app's identity; never the secret itself.
      SOURCE_HEADERS: empty(sourceHeaders) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.sourceHeadersSecretUri})'
      SOURCE_CLIENT_SECRET: empty(sourceClientSecret) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.sourceClientSecretUri})'
      SOURCE_AUTH: sourceAuth
      SOURCE_TOKEN_URL: sourceTokenUrl
      SOURCE_CLIENT_ID: sourceClientId
      SOURCE_SCOPE: sourceScope
      SOURCE_PAGINATION: sourcePagination
      SOURCE_ITEMS_PATH: sourceItemsPath
      SOURCE_NEXT_PATH: sourceNextPath
      SOURCE_CURSOR_PATH: sourceCursorPath
      SOURCE_CURSOR_PARAM: sourceCursorParam
      SOURCE_PAGE_PARAM: sourcePageParam
      SOURCE_PAGE_SIZE_PARAM: sourcePageSizeParam
      SOURCE_PAGE_SIZE: string(sourcePageSize)
      SOURCE_FIRST_PAGE: string(sourceFirstPage)
      CHUNKING_TIME_BUDGET: string(chunkingTimeBudget)
      CHUNKING_TIME_LIMIT: '480'
      CONTROL_QUEUE: controlQueueName
      SOURCE_TIMEOUT: '60'
      SOURCE_MAX_ATTEMPTS: '8'
      SOURCE_RETRY_BASE_DELAY: '0.5'
      SOURCE_RETRY_MAX_DELAY: '30'
      SOURCE_READ_DEADLINE: '300'
      SOURCE_MAX_PAGES: '1000000'
      SOURCE_MAX_ITEMS: '100000000'
      SOURCE_MAX_READS_PER_ITEM: '2'
      SOURCE_MAX_EMPTY_PAGES: '1000'
      SOURCE_MAX_DEPTH: '64'
      SOURCE_MAX_PAGE_BYTES: '16777216'
      SOURCE_MAX_ERROR_BYTES: '4096'
      CHUNK_SIZE: string(chunkSize)
      CHUNK_MAX_BYTES: '8388608'
      CHUNK_CONTAINER: chunkContainerName
      CHUNK_UPLOAD_CONCURRENCY: '8'
      RUNS_CONTAINER: runsContainerName
      QUEUE_NAME: queueName
      QUEUE_PARTITIONS: string(queuePartitions)
      QUEUE_MESSAGE_ENCODING: queueMessageEncoding
      QUEUE_MESSAGE_TTL: queueMessageTtl
      QUEUE_MESSAGE_VISIBILITY_TIMEOUT: string(queueMessageVisibilityTimeout)
      INGEST_CONCURRENCY: string(ingestConcurrency)
      INGEST_CHECKPOINT_EVERY: '1000'
      INGEST_LEASE_SECONDS: '60'
      LARGE_MESSAGE_MODE: 'claim-check'
      LARGE_MESSAGE_CONTAINER: largeMessageContainerName
      STORAGE_MAX_RETRIES: '5'
      STORAGE_RETRY_BACKOFF: '1'
      STORAGE_RETRY_MAX_DELAY: '30'
      STORAGE_TIMEOUT: '30'
      STORAGE_SPARE_CONNECTIONS: '4'
      SAS_LIFETIME: '7200'
      AZURE_HTTP_USER_AGENT: ''
      HTTP_MAX_BODY_BYTES: '65536'
      HTTP_RETRY_AFTER: '5'
      REDRIVE_QUEUE: 'chunk-redrives'
      TOLERATED_FAILED_CHUNKS: '0'
      TOLERATED_FAILED_PERCENT: '0'
      MESSAGE_BATCH_MAX_ITEMS: '1'
      MESSAGE_ENVELOPE: 'false'
      QUEUE_MAX_BACKLOG: '0'
      BACKLOG_RETRY_SECONDS: '30'
      RUN_EVENTS_QUEUE: 'ingestion-events'
      RUN_EVENTS_WEBHOOK: runEventsTopic ? runEventsTopicModule.outputs.endpoint : runEventsWebhook
      RUN_EVENTS_WEBHOOK_AUDIENCE: runEventsTopic ? 'https://eventgrid.azure.net' : ''
      RUN_EVENTS_WEBHOOK_TIMEOUT: '10'
      RUN_EVENTS_WEBHOOK_ATTEMPTS: '3'
      RUN_EVENTS_WEBHOOK_RETRY_DELAY: '1'
      RUN_EVENTS_WEBHOOK_DELIVERIES: '10'
      AZURE_SDK_LOG_LEVEL: 'WARNING'
      // The main account and each extra one by its queue endpoint (reached with the app's identity).
      QUEUE_ACCOUNTS: join(concat(['AzureWebJobsStorage'], queueAccountEndpoints), ',')
      EVENT_GRID_DEADLETTER_CONTAINER: deadLetterContainerName
      SWEEP_SCHEDULE: sweepSchedule
      SWEEP_MAX_REDRIVES: '100'
      SWEEP_STALE_SECONDS: '600'
      SWEEP_TIME_BUDGET: '120'
      SWEEP_GIVE_UP_AFTER: '5'
      RUN_MAX_CONCURRENCY: string(runMaxConcurrency)
      THROTTLE_RETRY_SECONDS: '15'
    }
  }
}

module runEventsTopicModule 'modules/run-events-topic.bicep' = if (runEventsTopic) {
  name: 'run-events-topic'
  params: {
    name: runEventsTopicName
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    vnetEnabled: vnetEnabled
  }
}

module eventGrid 'modules/event-grid.bicep' = {
  name: 'event-grid'
  params: {
    name: 'evgt-${name}-${take(token, 6)}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deadLetterContainerName: deadLetterContainerName
  }
}

output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_HOST string = functionApp.outputs.defaultHostName
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_EVENT_GRID_TOPIC_NAME string = eventGrid.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output VNET_ENABLED bool = vnetEnabled
output CHUNK_CONTAINER string = chunkContainerName
output EVENT_GRID_DEADLETTER_CONTAINER string = deadLetterContainerName
