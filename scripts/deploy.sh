#!/usr/bin/env bash
# Build the one agentfn image, push it to the kind cluster's local registry and deploy the
# agents with it: `agentfn deploy --image localhost:5001/agentfn:TAG`, which renders the
# manifests into OUT_DIR (default build/deploy, kept for review) and kubectl-applies them.
# The model server's image (TAG-inference: the same build with the inference extra, on the CPU
# build of torch, since kind nodes have no GPU) is built and pushed beside it, and its
# InferenceService is the CPU variant (`--model-server cpu`). MODEL_SERVER=off skips both.
#
# TAG defaults to the commit (short hash, with -dirty-<time> for uncommitted changes): a new
# tag per build is what makes Knative roll out a new revision, since the kind cluster skips tag
# resolution for localhost:5001 (kind-up.sh). Arguments are passed on to `agentfn deploy`
# (targets, --profile, --otel, --dry-run ...). DRY_RUN=1 prints every command instead.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${BASH_SOURCE[0]%/*}/lib.sh"

NAMESPACE=${NAMESPACE:-agentfn}
OUT_DIR=${OUT_DIR:-$ROOT_DIR/build/deploy}

default_tag() {
    local commit changes stamp
    commit=$(probe git -C "$ROOT_DIR" rev-parse --short=12 HEAD) || {
        printf 'dev'
        return
    }
    changes=$(probe git -C "$ROOT_DIR" status --porcelain --untracked-files=no) || changes=""
    if [[ -n $changes ]]; then
        printf -v stamp '%(%Y%m%d%H%M%S)T' -1
        commit+="-dirty-$stamp"
    fi
    printf '%s' "$commit"
}

agentfn_command() {
    if have agentfn; then
        printf 'agentfn'
    elif [[ -x $ROOT_DIR/.venv/bin/agentfn ]]; then
        printf '%s' "$ROOT_DIR/.venv/bin/agentfn"
    else
        printf 'agentfn' # a dry run on a machine where it is not installed yet: `make venv`
    fi
}

TAG=${TAG:-$(default_tag)}
IMAGE=localhost:$REGISTRY_PORT/agentfn:$TAG
MODEL_IMAGE=$IMAGE-inference
MODEL_SERVER=${MODEL_SERVER:-cpu}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
AGENTFN=$(agentfn_command)

need docker kubectl "$AGENTFN"

log "image $IMAGE"
run docker build -t "$IMAGE" "$ROOT_DIR"
run docker push "$IMAGE"
model_args=(--model-server "$MODEL_SERVER")
if [[ $MODEL_SERVER != off ]]; then
    log "model server image $MODEL_IMAGE"
    run docker build --build-arg EXTRAS=otlp,inference --build-arg "TORCH_INDEX=$TORCH_INDEX" \
        -t "$MODEL_IMAGE" "$ROOT_DIR"
    run docker push "$MODEL_IMAGE"
    model_args+=(--model-image "$MODEL_IMAGE")
fi

log "deploy to $KUBE_CONTEXT, namespace $NAMESPACE"
run kubectl config use-context "$KUBE_CONTEXT"
run "$AGENTFN" deploy --image "$IMAGE" "${model_args[@]}" --namespace "$NAMESPACE" \
    --out "$OUT_DIR" "$@"
log "deployed $IMAGE; next: scripts/smoke.sh"
