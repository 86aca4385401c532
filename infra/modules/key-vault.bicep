// The Key Vault that holds the app's secrets: the source's headers (e.g. an API key) and the OAuth2 client
// secret of the source's token endpoint. RBAC authorization only (no access policies): the app's identity
// gets Key Vault Secrets User on this vault in roles.bicep, and each app setting holds a Key Vault
// reference, never the secret itself.
//
// Soft delete is on (7 days, the minimum). Purge protection is left off on purpose, for a sample: it can
// never be turned off again, and it would keep the vault's name (derived from the environment name) taken
// for the whole retention period after `infra/destroy.sh`, so the same environment could not be deployed
// again; destroy.sh purges the vault instead. The vault holds only copies of what the operator passes in
// SOURCE_HEADERS and SOURCE_CLIENT_SECRET. For production, set `enablePurgeProtection: true` (ARM accepts
// true or nothing, never false).
//
// Without the private network (main.bicep `vnetEnabled` false), public network access stays on: a Flex
// Consumption app without a virtual network resolves Key Vault references over the public endpoint (App
// Service's outbound addresses are not stable enough for a firewall rule); only Entra ID principals with a
// role on the vault get in. With it, the public endpoint is closed and the app resolves the references
// through the vault's private endpoint; Resource Manager still writes the secrets (control plane).
param name string
param location string
param tags object = {}

@secure()
@description('JSON object of headers for the source; the secret is created only when this is not empty.')
param sourceHeaders string = ''

@secure()
@description('The source token endpoint\'s OAuth2 client secret; the secret is created only when this is not empty.')
param sourceClientSecret string = ''

@description('true: reached through its private endpoint only (main.bicep vnetEnabled): public network access off.')
param vnetEnabled bool = false

// Key Vault secret names allow letters, digits and dashes only (not SOURCE_HEADERS).
var sourceHeadersSecretName = 'source-headers'
var sourceClientSecretName = 'source-client-secret'
// The secrets the operator gave: an empty one is not written (its app setting is empty, not a reference).
var sourceHeadersSecrets = empty(sourceHeaders) ? [] : [
  {
    name: sourceHeadersSecretName
    value: sourceHeaders
    contentType: 'application/json'
  }
]
var sourceClientSecrets = empty(sourceClientSecret) ? [] : [
  {
    name: sourceClientSecretName
    value: sourceClientSecret
    contentType: 'text/plain'
  }
]
var secrets = concat(sourceHeadersSecrets, sourceClientSecrets)

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
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
    }
  }
}

resource vaultSecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for secret in secrets: {
    parent: vault
    name: secret.name
    properties: {
      value: secret.value
      contentType: secret.contentType
    }
  }
]

output name string = vault.name
output id string = vault.id
// Versionless: the app picks up a new version of the secret without a redeploy (App Service refreshes
// Key Vault references within a day, or at once on a restart or a settings change).
output sourceHeadersSecretUri string = '${vault.properties.vaultUri}secrets/${sourceHeadersSecretName}'
output sourceClientSecretUri string = '${vault.properties.vaultUri}secrets/${sourceClientSecretName}'
