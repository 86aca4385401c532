// The Key Vault that holds the app's secrets (today: the source's headers, e.g. an API key). RBAC
// authorization only (no access policies): the app's identity gets Key Vault Secrets User on this vault
// in roles.bicep, and the app setting holds a Key Vault reference, never the secret itself.
//
// Soft delete is on (7 days, the minimum). Purge protection is left off on purpose, for a sample: it can
// never be turned off again, and it would keep the vault's name (derived from the environment name) taken
// for the whole retention period after `infra/destroy.sh`, so the same environment could not be deployed
// again; destroy.sh purges the vault instead. The vault holds only a copy of what the operator passes in
// SOURCE_HEADERS. For production, set `enablePurgeProtection: true` (ARM accepts true or nothing, never false).
//
// Public network access stays on: a Flex Consumption app without a virtual network resolves Key Vault
// references over the public endpoint (App Service's outbound addresses are not stable enough for a
// firewall rule). Only Entra ID principals with a role on the vault get in.
param name string
param location string
param tags object = {}

@secure()
@description('JSON object of headers for the source; the secret is created only when this is not empty.')
param sourceHeaders string = ''

// Key Vault secret names allow letters, digits and dashes only (not SOURCE_HEADERS).
var sourceHeadersSecretName = 'source-headers'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource sourceHeadersSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(sourceHeaders)) {
  parent: vault
  name: sourceHeadersSecretName
  properties: {
    value: sourceHeaders
    contentType: 'application/json'
  }
}

output name string = vault.name
output id string = vault.id
// Versionless: the app picks up a new version of the secret without a redeploy (App Service refreshes
// Key Vault references within a day, or at once on a restart or a settings change).
output sourceHeadersSecretUri string = '${vault.properties.vaultUri}secrets/${sourceHeadersSecretName}'
