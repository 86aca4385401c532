// The private network (main.bicep's `vnetEnabled`): a virtual network with two subnets, and one private DNS
// zone per private-link sub-resource the app reaches (blob, queue, table, vault, and topic with the run-events
// topic), each linked to the network.
//
// - `app`: the function app's outbound integration subnet, delegated to Microsoft.App/environments (what
//   Flex Consumption requires; the subscription needs the Microsoft.App resource provider registered).
// - `private-endpoints`: the private endpoints of the storage accounts and the Key Vault
//   (modules/private-endpoints.bicep), whose names resolve to their private addresses through the zones.
param name string
param location string
param tags object = {}
@description('main.bicep runEventsTopic: the topic gets a private endpoint, so its zone is needed too.')
param runEventsTopic bool = false

// Change these before peering with a network whose addresses overlap.
var addressPrefix = '10.0.0.0/16'
var appSubnetPrefix = '10.0.1.0/24'
var privateEndpointSubnetPrefix = '10.0.2.0/24'
var appSubnetName = 'app'
var privateEndpointSubnetName = 'private-endpoints'
// The private-link zone of each sub-resource (groupId) a private endpoint here may target.
var zoneNames = {
  blob: 'privatelink.blob.${environment().suffixes.storage}'
  queue: 'privatelink.queue.${environment().suffixes.storage}'
  table: 'privatelink.table.${environment().suffixes.storage}'
  vault: 'privatelink.vaultcore.azure.net'
  topic: 'privatelink.eventgrid.azure.net'
}
var zones = concat([
  zoneNames.blob
  zoneNames.queue
  zoneNames.table
  zoneNames.vault
], runEventsTopic ? [zoneNames.topic] : [])

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource privateZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [
  for zone in zones: {
    name: zone
    location: 'global'
    tags: tags
  }
]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (zone, index) in zones: {
    parent: privateZones[index]
    name: name
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnet.id
      }
    }
  }
]

output appSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, appSubnetName)
output privateEndpointSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, privateEndpointSubnetName)
// Zone IDs by groupId, for the endpoints' DNS zone groups (the zones exist once this module has deployed).
output dnsZoneIds object = {
  blob: resourceId('Microsoft.Network/privateDnsZones', zoneNames.blob)
  queue: resourceId('Microsoft.Network/privateDnsZones', zoneNames.queue)
  table: resourceId('Microsoft.Network/privateDnsZones', zoneNames.table)
  vault: resourceId('Microsoft.Network/privateDnsZones', zoneNames.vault)
  topic: resourceId('Microsoft.Network/privateDnsZones', zoneNames.topic)
}
