#!/usr/bin/env bash
# A kind cluster for agentfn: a local registry on localhost:5001, Knative Serving with Kourier,
# Knative Eventing with the Kafka Broker, a single-node Kafka (Strimzi, KRaft) as
# my-cluster-kafka-bootstrap.kafka:9092, cert-manager and KServe in Knative mode. Every version
# comes from versions.env.
#
# Idempotent: the cluster and the registry container are created only when missing, and the
# rest is `kubectl apply` and `kubectl patch`, which change nothing the second time.
# DRY_RUN=1 prints every command instead of running it (see lib.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${BASH_SOURCE[0]%/*}/lib.sh"

need docker kind kubectl curl sed

work_dir=""
if ! dry_run; then
    work_dir=$(mktemp -d)
    trap 'rm -rf "$work_dir"' EXIT
fi

cluster_exists() {
    local clusters name
    clusters=$(probe kind get clusters) || return 1
    while IFS= read -r name; do
        [[ $name == "$CLUSTER_NAME" ]] && return 0
    done <<<"$clusters"
    return 1
}

registry_running() {
    [[ $(probe docker inspect -f '{{.State.Running}}' "$REGISTRY_NAME" || true) == true ]]
}

registry_on_kind_network() {
    local network
    network=$(probe docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY_NAME") ||
        return 1
    [[ -n $network && $network != null ]]
}

cluster_nodes() {
    # A dry run on a fresh machine: the one node kind would name <cluster>-control-plane.
    probe kind get nodes --name "$CLUSTER_NAME" || printf '%s-control-plane\n' "$CLUSTER_NAME"
}

wait_available() { # namespace: every Deployment in it
    kubectl_ctx wait deployment --all -n "$1" --for=condition=Available --timeout="$WAIT_TIMEOUT"
}

wait_crds() {
    local crd
    for crd in "$@"; do
        kubectl_ctx wait --for=condition=Established --timeout="$WAIT_TIMEOUT" "crd/$crd"
    done
}

# --- registry and cluster (the kind docs' local registry pattern) ---------------------------
if [[ -n ${KIND_VERSION:-} ]] && have kind && ! dry_run; then
    kind_cli=$(kind version | { read -r _ version _ && printf '%s' "$version"; } || true)
    [[ $kind_cli == "$KIND_VERSION" ]] ||
        log "warning: kind $kind_cli; $KIND_NODE_IMAGE was released with kind $KIND_VERSION"
fi

log "local registry $REGISTRY_NAME on localhost:$REGISTRY_PORT"
if registry_running; then
    log "registry $REGISTRY_NAME is running"
else
    run docker run -d --restart=always -p "127.0.0.1:$REGISTRY_PORT:5000" --network bridge \
        --name "$REGISTRY_NAME" "$REGISTRY_IMAGE"
fi

log "kind cluster $CLUSTER_NAME"
if cluster_exists; then
    log "cluster $CLUSTER_NAME exists"
else
    # config_path lets each node read per-registry hosts.toml files (written below).
    kind_config="kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: $CLUSTER_NAME
nodes:
  - role: control-plane
    image: $KIND_NODE_IMAGE
containerdConfigPatches:
  - |-
    [plugins.\"io.containerd.grpc.v1.cri\".registry]
      config_path = \"/etc/containerd/certs.d\""
    run_input "$kind_config" kind create cluster --name "$CLUSTER_NAME" --config=- \
        --wait "$WAIT_TIMEOUT"
fi

# localhost:5001 inside a node is the registry container, reached over the kind network.
registry_dir="/etc/containerd/certs.d/localhost:$REGISTRY_PORT"
while IFS= read -r node; do
    [[ -n $node ]] || continue
    run docker exec "$node" mkdir -p "$registry_dir"
    run_input "[host.\"http://$REGISTRY_NAME:5000\"]" \
        docker exec -i "$node" cp /dev/stdin "$registry_dir/hosts.toml"
done < <(cluster_nodes)

if ! registry_on_kind_network; then
    run docker network connect kind "$REGISTRY_NAME"
fi

# KEP-1755: tells tools (and people) where the cluster's local registry is.
kubectl_ctx_input "apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: \"localhost:$REGISTRY_PORT\"
    help: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"" apply -f -

# --- Knative Serving + Kourier ---------------------------------------------------------------
log "Knative Serving $KNATIVE_SERVING_VERSION, Kourier $KOURIER_VERSION"
serving=https://github.com/knative/serving/releases/download/$KNATIVE_SERVING_VERSION
kubectl_ctx apply -f "$serving/serving-crds.yaml"
wait_crds services.serving.knative.dev configurations.serving.knative.dev \
    revisions.serving.knative.dev routes.serving.knative.dev
kubectl_ctx apply -f "$serving/serving-core.yaml"
kubectl_ctx apply -f \
    "https://github.com/knative-extensions/net-kourier/releases/download/$KOURIER_VERSION/kourier.yaml"
kubectl_ctx patch configmap/config-network -n knative-serving --type merge \
    -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
# The controller resolves image tags to digests by asking the registry, which it cannot reach
# as localhost:5001; the nodes can, so tags of the local registry are left unresolved.
kubectl_ctx patch configmap/config-deployment -n knative-serving --type merge \
    -p "{\"data\":{\"registries-skipping-tag-resolving\":\"kind.local,ko.local,dev.local,localhost:$REGISTRY_PORT\"}}"
wait_available knative-serving
wait_available kourier-system

# --- Knative Eventing + the Kafka Broker -----------------------------------------------------
log "Knative Eventing $KNATIVE_EVENTING_VERSION, Kafka Broker $KAFKA_BROKER_VERSION"
eventing=https://github.com/knative/eventing/releases/download/$KNATIVE_EVENTING_VERSION
kubectl_ctx apply -f "$eventing/eventing-crds.yaml"
wait_crds brokers.eventing.knative.dev triggers.eventing.knative.dev \
    sinkbindings.sources.knative.dev
kubectl_ctx apply -f "$eventing/eventing-core.yaml"
kafka_broker=https://github.com/knative-extensions/eventing-kafka-broker/releases/download/$KAFKA_BROKER_VERSION
kubectl_ctx apply -f "$kafka_broker/eventing-kafka-controller.yaml"
kubectl_ctx apply -f "$kafka_broker/eventing-kafka-broker.yaml"
wait_available knative-eventing

# --- Kafka: Strimzi and a single-node KRaft cluster ------------------------------------------
log "Strimzi $STRIMZI_VERSION, Kafka $KAFKA_VERSION (my-cluster in namespace kafka)"
kubectl_ctx_input "apiVersion: v1
kind: Namespace
metadata:
  name: kafka" apply -f -
# The release manifest names the namespace `myproject`; the Strimzi docs rewrite it like this.
strimzi_file=${work_dir:-/tmp}/strimzi-cluster-operator-$STRIMZI_VERSION.yaml
run curl -fsSL -o "$strimzi_file" \
    "https://github.com/strimzi/strimzi-kafka-operator/releases/download/$STRIMZI_VERSION/strimzi-cluster-operator-$STRIMZI_VERSION.yaml"
run sed -i 's/namespace: .*/namespace: kafka/' "$strimzi_file"
# Server-side: Strimzi's CRDs are too large for the last-applied annotation of a client apply.
kubectl_ctx apply --server-side --force-conflicts -n kafka -f "$strimzi_file"
kubectl_ctx wait deployment/strimzi-cluster-operator -n kafka --for=condition=Available \
    --timeout="$WAIT_TIMEOUT"
wait_crds kafkas.kafka.strimzi.io kafkanodepools.kafka.strimzi.io
kubectl_ctx_input "apiVersion: kafka.strimzi.io/v1beta2
kind: KafkaNodePool
metadata:
  name: dual-role
  namespace: kafka
  labels:
    strimzi.io/cluster: my-cluster
spec:
  replicas: 1
  roles:
    - controller
    - broker
  storage:
    type: jbod
    volumes:
      - id: 0
        type: ephemeral
        kraftMetadata: shared
---
apiVersion: kafka.strimzi.io/v1beta2
kind: Kafka
metadata:
  name: my-cluster
  namespace: kafka
  annotations:
    strimzi.io/node-pools: enabled
    strimzi.io/kraft: enabled
spec:
  kafka:
    version: $KAFKA_VERSION
    listeners:
      - name: plain
        port: 9092
        type: internal
        tls: false
    config:
      offsets.topic.replication.factor: 1
      transaction.state.log.replication.factor: 1
      transaction.state.log.min.isr: 1
      default.replication.factor: 1
      min.insync.replicas: 1
  entityOperator:
    topicOperator: {}" apply -f -
kubectl_ctx wait kafka/my-cluster -n kafka --for=condition=Ready --timeout=600s

# --- cert-manager and KServe -----------------------------------------------------------------
log "cert-manager $CERT_MANAGER_VERSION, KServe $KSERVE_VERSION"
kubectl_ctx apply -f \
    "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
wait_available cert-manager
kserve=https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION
kubectl_ctx apply --server-side --force-conflicts -f "$kserve/kserve.yaml"
kubectl_ctx wait deployment/kserve-controller-manager -n kserve --for=condition=Available \
    --timeout="$WAIT_TIMEOUT"
kubectl_ctx apply --server-side --force-conflicts -f "$kserve/kserve-cluster-resources.yaml"
# Knative mode by default (the rendered InferenceServices also say so each), and no Istio: with
# Kourier as Knative's ingress, KServe must not create its top-level Istio VirtualService
# (`disableIstioVirtualHost`); the InferenceService is reached through its Knative Route. The
# ingress value is one JSON document, so the patch restates KServe's defaults beside it.
isvc_patch='{"data": {"deploy": "{\"defaultDeploymentMode\": \"Knative\"}", "ingress": "{\"enableGatew'\
'ayApi\": false, \"kserveIngressGateway\": \"kserve/kserve-ingress-gateway\", \"ingressGate'\
'way\": \"knative-serving/knative-ingress-gateway\", \"localGateway\": \"knative-serving/kn'\
'ative-local-gateway\", \"localGatewayService\": \"knative-local-gateway.istio-system.svc.c'\
'luster.local\", \"ingressDomain\": \"example.com\", \"ingressClassName\": \"istio\", \"dom'\
'ainTemplate\": \"{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}\", \"urlScheme\": \"htt'\
'p\", \"disableIstioVirtualHost\": true, \"disableIngressCreation\": false, \"disableHTTPRo'\
'uteTimeout\": false}"}}'
kubectl_ctx patch configmap/inferenceservice-config -n kserve --type merge -p "$isvc_patch"

# --- prometheus-operator's CRDs that the render uses ---------------------------------------
# The dead-letters sink's PodMonitor and PrometheusRule apply as they would in production; no
# operator or Prometheus runs on kind to act on them.
log "PodMonitor and PrometheusRule CRDs (prometheus-operator $PROMETHEUS_OPERATOR_VERSION)"
monitoring=https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/$PROMETHEUS_OPERATOR_VERSION/example/prometheus-operator-crd
for plural in podmonitors prometheusrules; do
    kubectl_ctx apply --server-side --force-conflicts -f \
        "$monitoring/monitoring.coreos.com_$plural.yaml"
done
wait_crds podmonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com

log "cluster $CLUSTER_NAME is ready (context $KUBE_CONTEXT); next: scripts/deploy.sh"
