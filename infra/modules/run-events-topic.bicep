// An Event Grid custom topic for the runs' completion events (off by default: main.bicep's
// `runEventsTopic`). It takes CloudEvents 1.0, the form the app posts them in (RUN_EVENTS_WEBHOOK), and
// Entra tokens only (no access keys): the app's identity may send to this one topic and do nothing else.
// With the private network, the app posts through the topic's private endpoint; its public access is off.
param name string
param location string
param principalId string
param tags object = {}
@description('true: reached through its private endpoint only (main.bicep vnetEnabled): public network access off.')
param vnetEnabled bool = false

// Built-in role definition ID (the same in every tenant).
var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7'

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned' // for delivering to subscribers by identity
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    inboundIpRules: []
  }
}

resource senderRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, principalId, eventGridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = topic.name
output endpoint string = topic.properties.endpoint
