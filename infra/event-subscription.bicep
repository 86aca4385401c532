// The blob trigger's Event Grid subscription: BlobCreated on the chunk container → the ingestion
// function's webhook. Deployed by infra/event-subscription.sh after the code is deployed (the webhook needs
// the blobs_extension system key, which the host creates on its first start); not part of main.bicep.
//
// The key never reaches the machine that deploys: Resource Manager reads it with listKeys while it deploys
// this template, so it is on no command line, in no file and in no deployment parameter. A deployment is
// a PUT: running it again updates the subscription in place.
targetScope = 'resourceGroup'

@description('The Event Grid system topic on the storage account (main.bicep output AZURE_EVENT_GRID_TOPIC_NAME).')
param systemTopicName string

@description('The function app (main.bicep output AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('The blob trigger\'s webhook without its key: https://<app>/runtime/webhooks/blobs?functionName=Host.Functions.<function>')
param webhookUrl string

param chunkContainerName string = 'chunks'

@description('Blob container, on the topic\'s storage account, for events that could not be delivered.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Deliveries tried per event before it is dead-lettered (Event Grid backs off between them).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an event is retried for before it is dead-lettered.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource functionHost 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: functionApp
  name: 'default'
}

resource chunkCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'chunk-created'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${webhookUrl}&code=${functionHost.listKeys().systemKeys.blobs_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${chunkContainerName}/'
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    // Written with the topic's system-assigned identity (Storage Blob Data Contributor on this container,
    // granted in modules/event-grid.bicep): the account takes no shared keys. Event Grid names the blobs
    // after the subscription in upper case (CHUNK-CREATED) and the date and hour. The dead-letter container
    // is outside the filter above, so writing them raises no event this subscription would pick up.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: topic.properties.source
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output name string = chunkCreated.name
