// The Event Grid system topic on the storage account. Its subscription (BlobCreated on the chunk
// container → the blob trigger's webhook) is made after the code is deployed, by
// infra/event-subscription.sh: the webhook needs the blobs_extension key, which exists only then.
param name string
param location string
param storageAccountId string
param tags object = {}

resource topic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: name
  location: location
  tags: tags
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = topic.name
