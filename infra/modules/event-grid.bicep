// The Event Grid system topic on the storage account. Its subscription (BlobCreated on the chunk
// container → the blob trigger's webhook) is made after the code is deployed, by
// infra/event-subscription.sh (infra/event-subscription.bicep): the webhook needs the blobs_extension key,
// which exists only then.
//
// Events Event Grid cannot deliver (retries spent, or too old) are dead-lettered as blobs into a container
// on the same storage account. Shared-key access is off there, so the topic writes them with its own
// system-assigned identity, which may write blobs in that one container and nowhere else.
param name string
param location string
param storageAccountName string
param deadLetterContainerName string
param tags object = {}

// Built-in role definition ID (the same in every tenant).
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, topic.id, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = topic.name
