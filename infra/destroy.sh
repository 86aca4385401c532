#!/usr/bin/env bash
# Deletes everything infra/deploy.sh NAME created: the whole resource group, then purges its Key Vault,
# which a deletion only soft-deletes (the vault's name would stay taken, and `infra/deploy.sh NAME` would
# fail, for the retention period). The vault holds only a copy of SOURCE_HEADERS.
#
#   infra/destroy.sh NAME [--yes]
set -euo pipefail

NAME="${1:?usage: infra/destroy.sh NAME [--yes]}"
RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-rg-${NAME}}"
if [ "${2:-}" != "--yes" ]; then
  read -r -p "Delete resource group ${RESOURCE_GROUP} and everything in it, and purge its Key Vault? [y/N] " answer
  [ "$answer" = "y" ] || { echo "Nothing deleted." >&2; exit 1; }
fi
# The app's vaults (tagged by main.bicep), listed before the group and its tags are gone.
vaults=$(az keyvault list --resource-group "$RESOURCE_GROUP" \
  --query "[?tags.app=='azure-queue-fanout'].name" --output tsv 2>/dev/null || true)
az group delete --name "$RESOURCE_GROUP" --yes
echo "Deleted ${RESOURCE_GROUP}." >&2
while read -r vault; do
  [ -n "$vault" ] || continue
  az keyvault purge --name "$vault"
  echo "Purged Key Vault ${vault}." >&2
done <<<"$vaults"
