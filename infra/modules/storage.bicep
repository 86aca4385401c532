// The storage account: chunk and run containers, the app's deployment container, the target queue(s).
// Shared-key access is off: the app and the Functions host reach it with the managed identity only.
param name string
param location string
param containerNames array
param queueNames array
param tags object = {}
@description('Blob name prefixes (container/) the lifecycle rule deletes once unchanged for retentionDays: chunks, run records.')
param retentionPrefixes array
@minValue(1)
param retentionDays int = 7
@description('Blob name prefixes of the claim-check blobs, deleted claimCheckRetentionDays after they were written.')
param claimCheckPrefixes array
@description('0: no claim-check rule (the messages never expire, so neither may their claim checks).')
@minValue(0)
param claimCheckRetentionDays int = 7
@description('true: reached through private endpoints only (main.bicep vnetEnabled): public network access off.')
param vnetEnabled bool = false

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // With the private network, the public endpoint is closed; the app, its deployment package and the
    // consumers inside the network come through the private endpoints (modules/private-endpoints.bicep).
    // Trusted Azure services (Event Grid writing dead letters with its identity) keep their exception.
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
    }
  }
}

// Child resources at the top level with `parent` (older Bicep parsers, checkov's among them, read these).
resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for containerName in containerNames: {
    parent: blobService
    name: containerName
    properties: {
      publicAccess: 'None'
    }
  }
]

// Retention: what `DELETE /api/ingestions/{run_id}` would remove, deleted by the platform once old enough.
// Claim-check blobs have a rule of their own: a consumer reads one through a queue message, so it must
// outlive the messages' time-to-live (7 days unless QUEUE_MESSAGE_TTL says otherwise). A queue-only
// account (`queueAccounts`) has no containers, so no rules (an empty prefix list would match every blob).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (!empty(containerNames)) {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'delete-old-runs'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: retentionPrefixes
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: retentionDays
                }
              }
            }
          }
        }
        {
          name: 'delete-old-claim-checks'
          enabled: claimCheckRetentionDays > 0
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: claimCheckPrefixes
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: max(claimCheckRetentionDays, 1)
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
