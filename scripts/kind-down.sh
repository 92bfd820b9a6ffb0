#!/usr/bin/env bash
# Delete what kind-up.sh made: the kind cluster and the local registry container.
# Idempotent (`kind delete cluster` on a missing cluster succeeds; the registry is removed only
# where it exists). DRY_RUN=1 prints the commands; without docker it assumes the registry that
# kind-up.sh would have started.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${BASH_SOURCE[0]%/*}/lib.sh"

need docker kind

registry_exists() {
    if dry_run && ! have docker; then
        return 0
    fi
    probe docker inspect -f '{{.Id}}' "$REGISTRY_NAME" >/dev/null
}

log "kind cluster $CLUSTER_NAME"
run kind delete cluster --name "$CLUSTER_NAME"
if registry_exists; then
    log "registry $REGISTRY_NAME"
    run docker rm -f "$REGISTRY_NAME"
fi
