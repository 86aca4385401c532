// The private endpoints of one resource (a storage account or the Key Vault), one per sub-resource (groupId),
// in the network's private-endpoint subnet, each with a DNS zone group that registers its private address in
// the matching privatelink zone (modules/network.bicep), so that the resource's usual name resolves to that
// address inside the network.
param name string
param location string
param tags object = {}
@description('Resource ID of the storage account or Key Vault.')
param targetId string
@description('Sub-resources to reach privately: blob, queue, table (storage) or vault (Key Vault).')
param groupIds array
param subnetId string
@description('Private DNS zone ID by groupId (modules/network.bicep output dnsZoneIds).')
param dnsZoneIds object

resource endpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for groupId in groupIds: {
    name: 'pe-${name}-${groupId}'
    location: location
    tags: tags
    properties: {
      subnet: {
        id: subnetId
      }
      privateLinkServiceConnections: [
        {
          name: '${name}-${groupId}'
          properties: {
            privateLinkServiceId: targetId
            groupIds: [
              groupId
            ]
          }
        }
      ]
    }
  }
]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (groupId, index) in groupIds: {
    parent: endpoints[index]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [
        {
          name: groupId
          properties: {
            privateDnsZoneId: dnsZoneIds[groupId]
          }
        }
      ]
    }
  }
]
