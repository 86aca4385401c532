// A Flex Consumption (FC1) plan and a Linux Python function app that reaches storage, its deployment
// package, Application Insights and its Key Vault references with its user-assigned managed identity
// only. No basic (user name and password) publishing credentials: FTP and SCM take Entra ID only.
param name string
param location string
param tags object = {}
param identityId string
param identityClientId string
param storageBlobEndpoint string
param storageQueueEndpoint string
param storageTableEndpoint string
param deploymentContainerName string
param appInsightsConnectionString string
param pythonVersion string
param instanceMemoryMB int
param maximumInstanceCount int
@description('The integration subnet (modules/network.bicep) the app\'s outbound traffic goes through; empty: none.')
param virtualNetworkSubnetId string = ''
@description('The settings the app reads (see the README\'s settings table).')
param appSettings object

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references in the app settings (SOURCE_HEADERS) resolve with the user-assigned identity
    // (the default would be a system-assigned identity, which this app does not have).
    keyVaultReferenceIdentity: identityId
    // Outbound through the virtual network with the private network (storage, the deployment package and Key
    // Vault at their private endpoints); inbound unchanged: the app keeps its public HTTPS endpoint.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(appSettings, {
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId
      AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
      AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
      AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
      APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
      // The Python worker streams the app's OpenTelemetry (core/telemetry.py) itself; host.json: telemetryMode.
      PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
      // No span per source request: its URL holds the source's query-string key (core/telemetry.py).
      OTEL_PYTHON_DISABLED_INSTRUMENTATIONS: 'httpx'
      BLOB_TRIGGER_SOURCE: 'EventGrid'
    })
  }
}

// Basic publishing credentials off: deployments (`az functionapp deployment source config-zip`, azd)
// authenticate with Entra ID tokens, and nobody can publish with a user name and password.
// Top-level children with `parent` (checkov's parser reads these).
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
