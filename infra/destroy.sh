#!/usr/bin/env bash
# Deletes everything infra/deploy.sh NAME created: the whole resource group.
#
#   infra/destroy.sh NAME [--yes]
set -euo pipefail

NAME="${1:?usage: infra/destroy.sh NAME [--yes]}"
RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-rg-${NAME}}"
if [ "${2:-}" != "--yes" ]; then
  read -r -p "Delete resource group ${RESOURCE_GROUP} and everything in it? [y/N] " answer
  [ "$answer" = "y" ] || { echo "Nothing deleted." >&2; exit 1; }
fi
az group delete --name "$RESOURCE_GROUP" --yes
echo "Deleted ${RESOURCE_GROUP}." >&2
