// The app's identity on an extra queue account (`queueAccounts`): the one data-plane role it needs there,
// Storage Queue Data Contributor (create queues, put messages), scoped to that account only. The
// account holds target queues only: no blobs, no host bookkeeping, so no blob or table role.
param storageAccountName string
param principalId string

var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
