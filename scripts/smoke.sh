#!/usr/bin/env bash
# End to end on the cluster: post the reference chain's first event (agentfn.task.submitted,
# which the planner consumes) to the Broker through a port-forward of the Kafka Broker's
# ingress, and wait, up to DEADLINE_S seconds, for the chain's last event (agentfn.report.ready,
# which the aggregator emits) to arrive.
#
# The report is observed by a `reports` Service (the same image running `agentfn display`,
# which prints every event it receives) behind a Trigger on agentfn.report.ready; the event
# carries the chain id (agentfnchainid) this script chose, which is looked for in its log.
# Both are deleted on exit (KEEP=1 keeps them). DRY_RUN=1 prints every command instead.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${BASH_SOURCE[0]%/*}/lib.sh"

NAMESPACE=${NAMESPACE:-agentfn}
BROKER=${BROKER:-default}
LOCAL_PORT=${LOCAL_PORT:-18080}
DEADLINE_S=${DEADLINE_S:-300}
KEEP=${KEEP:-0}
SUBMITTED_TYPE=agentfn.task.submitted
REPORT_TYPE=agentfn.report.ready
SMOKE_ID=${SMOKE_ID:-smoke-$(printf '%(%Y%m%d%H%M%S)T' -1)-$RANDOM}
INGRESS_URL=http://127.0.0.1:$LOCAL_PORT/$NAMESPACE/$BROKER

need kubectl curl sleep

# The image the agents run (deploy.sh's tag), read from the planner's Service.
default_image() {
    local image
    image=$(probe kubectl --context "$KUBE_CONTEXT" get ksvc planner -n "$NAMESPACE" \
        -o 'jsonpath={.spec.template.spec.containers[0].image}') || image=""
    printf '%s' "${image:-localhost:$REGISTRY_PORT/agentfn:latest}"
}
IMAGE=${IMAGE:-$(default_image)}

# min-scale 1: the log must outlive the request (a scaled-to-zero pod takes its log with it).
# COLUMNS: `agentfn display` prints through rich, which would wrap a long line at 80.
reports="apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: reports
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/part-of: agentfn
    app.kubernetes.io/managed-by: agentfn-smoke
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: \"1\"
    spec:
      containers:
        - image: $IMAGE
          args: [display, --host, 0.0.0.0, --port, \"8080\", --label, reports]
          env:
            - name: COLUMNS
              value: \"100000\"
          ports:
            - name: http1
              containerPort: 8080
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: smoke-reports
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/part-of: agentfn
    app.kubernetes.io/managed-by: agentfn-smoke
spec:
  broker: $BROKER
  filters:
    - exact:
        type: $REPORT_TYPE
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: reports
  delivery:
    retry: 5
    backoffPolicy: exponential
    backoffDelay: PT0.5S"

forward_pid=""
cleanup() {
    if [[ -n $forward_pid ]]; then
        run kill "$forward_pid" || true
    fi
    if [[ $KEEP != 1 ]]; then
        kubectl_ctx delete trigger/smoke-reports ksvc/reports -n "$NAMESPACE" --ignore-not-found ||
            true
    fi
}
trap cleanup EXIT

log "reports sink ($IMAGE) and its Trigger on $REPORT_TYPE"
kubectl_ctx_input "$reports" apply -f -
kubectl_ctx wait ksvc/reports -n "$NAMESPACE" --for=condition=Ready --timeout="$WAIT_TIMEOUT"
kubectl_ctx wait trigger/smoke-reports -n "$NAMESPACE" --for=condition=Ready \
    --timeout="$WAIT_TIMEOUT"

log "port-forward of the Kafka Broker ingress to localhost:$LOCAL_PORT"
show kubectl --context "$KUBE_CONTEXT" port-forward -n knative-eventing \
    svc/kafka-broker-ingress "$LOCAL_PORT:80"
if ! dry_run; then
    kubectl --context "$KUBE_CONTEXT" port-forward -n knative-eventing \
        svc/kafka-broker-ingress "$LOCAL_PORT:80" >/dev/null &
    forward_pid=$!
fi

deadline=$((SECONDS + DEADLINE_S))
past_deadline() {
    ((SECONDS >= deadline))
}

# The ingress answers OPTIONS (Knative's preflight) once the port-forward carries requests.
ready_check=(curl -s -o /dev/null -w '%{http_code}' -X OPTIONS "$INGRESS_URL")
show "${ready_check[@]}"
if ! dry_run; then
    until [[ $("${ready_check[@]}" || true) =~ ^[2-4] ]]; do
        past_deadline && die "the broker ingress did not answer on localhost:$LOCAL_PORT"
        sleep 1
    done
fi

log "post $SUBMITTED_TYPE (id and chain id $SMOKE_ID) to /$NAMESPACE/$BROKER"
payload='{"title": "smoke", "text": "Knative scales each agent from zero. The broker retries. The aggregator joins the chunks into one report.", "max_words_per_chunk": 8}'
post=(curl -sS -o /dev/null -w '%{http_code}' -X POST "$INGRESS_URL"
    -H 'ce-specversion: 1.0'
    -H "ce-type: $SUBMITTED_TYPE"
    -H 'ce-source: /agentfn/smoke'
    -H "ce-id: $SMOKE_ID"
    -H "ce-agentfnchainid: $SMOKE_ID"
    -H 'content-type: application/json'
    --data "$payload")
show "${post[@]}"
if ! dry_run; then
    status=$("${post[@]}")
    [[ $status == 202 ]] || die "the broker ingress answered $status, not 202"
fi

log "wait up to ${DEADLINE_S}s for $REPORT_TYPE with agentfnchainid=$SMOKE_ID"
logs_command=(kubectl --context "$KUBE_CONTEXT" logs -n "$NAMESPACE"
    -l serving.knative.dev/service=reports -c user-container --tail=-1)
show "${logs_command[@]}"
dry_run && exit 0
while true; do
    output=$("${logs_command[@]}" 2>/dev/null || true)
    while IFS= read -r line; do
        if [[ $line == *"type=$REPORT_TYPE"* && $line == *"agentfnchainid=$SMOKE_ID"* ]]; then
            log "report arrived: $line"
            exit 0
        fi
    done <<<"$output"
    past_deadline && die "no $REPORT_TYPE for chain $SMOKE_ID within ${DEADLINE_S}s"
    sleep 2
done
