# shellcheck shell=bash
# Sourced by the scripts beside it: the versions, and one way to run an external command.
#
# Every command that changes something goes through `run` (or `run_input`, for a document on
# its standard input), which prints it first; with DRY_RUN=1 it is only printed. Commands that
# only read state (does the cluster exist? is the registry running?) go through `probe`: they
# run even with DRY_RUN=1 where the tool is installed, so a dry run shows what a real run would
# do on this machine; where the tool is missing, a dry run assumes a fresh machine on which
# nothing exists yet.

SCRIPTS_DIR=$(cd "${BASH_SOURCE[0]%/*}" && pwd)
# shellcheck disable=SC2034 # read by the scripts that source this file
ROOT_DIR=$(cd "$SCRIPTS_DIR/.." && pwd)
DRY_RUN=${DRY_RUN:-0}
export DRY_RUN

# shellcheck source-path=SCRIPTDIR source=versions.env
source "$SCRIPTS_DIR/versions.env"

CLUSTER_NAME=${CLUSTER_NAME:-agentfn}
KUBE_CONTEXT=kind-$CLUSTER_NAME
REGISTRY_NAME=${REGISTRY_NAME:-kind-registry}
REGISTRY_PORT=${REGISTRY_PORT:-5001}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-300s}

log() {
    printf '== %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

dry_run() {
    [[ $DRY_RUN == 1 ]]
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# `+ cmd args...`, quoted so that it can be pasted back into a shell.
show() {
    local quoted
    printf -v quoted ' %q' "$@"
    printf '+%s\n' "$quoted" >&2
}

run() {
    show "$@"
    dry_run && return 0
    "$@"
}

# run_input DOCUMENT CMD ARGS...: CMD reads DOCUMENT on its standard input (a manifest for
# `kubectl apply -f -`, a kind config). The dry run prints it as a here-document.
run_input() {
    local document=$1
    shift
    local quoted
    printf -v quoted ' %q' "$@"
    printf "+%s <<'EOF'\n%s\nEOF\n" "$quoted" "$document" >&2
    dry_run && return 0
    printf '%s\n' "$document" | "$@"
}

# probe CMD ARGS...: a read-only command; its status and output are the answer.
probe() {
    if dry_run && ! have "$1"; then
        printf '? %s (%s is not installed: nothing exists)\n' "$*" "$1" >&2
        return 1
    fi
    printf '? %s\n' "$*" >&2
    "$@" 2>/dev/null
}

# need TOOL...: fail early, naming what to install (a dry run needs none of them).
need() {
    dry_run && return 0
    local tool missing=()
    for tool in "$@"; do
        have "$tool" || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) || die "not on PATH: ${missing[*]} (see README, Deploy to Knative)"
}

kubectl_ctx() {
    run kubectl --context "$KUBE_CONTEXT" "$@"
}

kubectl_ctx_input() {
    local document=$1
    shift
    run_input "$document" kubectl --context "$KUBE_CONTEXT" "$@"
}
