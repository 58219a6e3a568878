#!/usr/bin/env bash
# The local pooled data centre: a kwok-simulated cluster with three sites of fake rack servers,
# the Verbund operator running on it, and the Saarland example applied.
#
#   hack/dev.sh up     build what is missing, start everything, wait until Ready, print a tour
#   hack/dev.sh down   stop Prometheus, the operator and the cluster; nothing keeps running or listening
#
# Prometheus (Debian's package) scrapes the operator and the API server and evaluates
# dashboards/verbund-rules.yaml.
#
# Everything lives under .dev/ (ignored by git): kubeconfig, operator log and pid, Prometheus's
# configuration and data, kwok's files.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev="$root/.dev"
cluster=verbund-dev
export KWOK_WORKDIR="$dev/kwok"
kubeconfig="$dev/kubeconfig"
admin_addr="127.0.0.1:${VERBUND_DEV_ADMIN_PORT:-9464}"
prometheus_addr="127.0.0.1:${VERBUND_DEV_PROMETHEUS_PORT:-9490}"
catalog_addr="127.0.0.1:${VERBUND_DEV_CATALOG_PORT:-9090}"
directory_addr="127.0.0.1:${VERBUND_DEV_DIRECTORY_PORT:-8081}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/verbund/target}"

# Sites of the pool: name, fake nodes, and the shape of one node (a two-socket rack server).
sites=(rz-land:4 rz-uds:3 rz-ego:3)
node_cpu=64 node_memory=512Gi node_pods=110

say() { printf '\033[1m[dev]\033[0m %s\n' "$*"; }

bin_dir() { "$root/hack/tools/build.sh" --bin-dir 2> >(grep -v 'up to date' >&2); }

operator_running() {
  [[ -f "$dev/operator.pid" ]] && kill -0 "$(cat "$dev/operator.pid")" 2>/dev/null
}

prometheus_running() {
  [[ -f "$dev/prometheus.pid" ]] && kill -0 "$(cat "$dev/prometheus.pid")" 2>/dev/null
}

stop_prometheus() {
  if prometheus_running; then
    say "stopping Prometheus (pid $(cat "$dev/prometheus.pid"))"
    kill -TERM "$(cat "$dev/prometheus.pid")"
    for _ in $(seq 100); do prometheus_running || break; sleep 0.2; done
    prometheus_running && kill -KILL "$(cat "$dev/prometheus.pid")"
  fi
  rm -f "$dev/prometheus.pid"
}

# Prometheus scraping the operator (job verbund-operator, the name the alerts expect) and the
# API server (with the cluster's admin certificate), with Verbund's rules.
start_prometheus() {
  local pki="$KWOK_WORKDIR/clusters/$cluster/pki" server
  server="$(kubectl --kubeconfig "$kubeconfig" config view -o jsonpath='{.clusters[0].cluster.server}')"
  mkdir -p "$dev/prometheus"
  cat >"$dev/prometheus/prometheus.yml" <<YAML
global:
  scrape_interval: 15s
  evaluation_interval: 15s
rule_files:
  - $root/dashboards/verbund-rules.yaml
scrape_configs:
  - job_name: verbund-operator
    # The pool's series carry their own namespace label (the PortalService's).
    honor_labels: true
    static_configs:
      - targets: ['$admin_addr']
  - job_name: kube-apiserver
    scheme: https
    tls_config:
      ca_file: $pki/ca.crt
      cert_file: $pki/admin.crt
      key_file: $pki/admin.key
    static_configs:
      - targets: ['${server#https://}']
YAML
  stop_prometheus
  say "starting Prometheus on http://$prometheus_addr (log: .dev/prometheus.log)"
  nohup prometheus --config.file="$dev/prometheus/prometheus.yml" \
    --storage.tsdb.path="$dev/prometheus/data" --web.listen-address="$prometheus_addr" \
    >"$dev/prometheus.log" 2>&1 </dev/null &
  echo $! >"$dev/prometheus.pid"
  for _ in $(seq 150); do
    curl -fs "http://$prometheus_addr/api/v1/query?query=verbund_build_info" | grep -q '"value"' && return 0
    prometheus_running || { tail -20 "$dev/prometheus.log"; echo "Prometheus exited" >&2; exit 1; }
    sleep 0.2
  done
  say "Prometheus has not scraped the operator yet; see .dev/prometheus.log"
}

down() {
  stop_prometheus
  if operator_running; then
    say "stopping the operator (pid $(cat "$dev/operator.pid"))"
    kill -TERM "$(cat "$dev/operator.pid")"
    for _ in $(seq 50); do operator_running || break; sleep 0.2; done
    operator_running && kill -KILL "$(cat "$dev/operator.pid")"
  fi
  rm -f "$dev/operator.pid"
  if [[ -d "$KWOK_WORKDIR/clusters/$cluster" ]]; then
    say "deleting the simulated cluster"
    "$(bin_dir)/kwokctl" delete cluster --name "$cluster" >>"$dev/kwokctl.log" 2>&1
  fi
  say "nothing of the local pool is running any more"
}

kwokctl_config() {
  local plugins
  plugins="$(grep -A7 'pub const ADMISSION_PLUGINS' "$root/tests/src/control_plane.rs" \
    | tr -d '\n\\ ' | sed -e 's/.*="//' -e 's/";.*//')"
  cat <<YAML
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
componentsPatches:
- name: kube-apiserver
  extraArgs:
  - key: enable-admission-plugins
    value: "$plugins"
- name: kube-scheduler
  extraArgs:
  - {key: kube-api-qps, value: "500"}
  - {key: kube-api-burst, value: "500"}
- name: kube-controller-manager
  extraArgs:
  - {key: kube-api-qps, value: "500"}
  - {key: kube-api-burst, value: "500"}
YAML
}

nodes_yaml() {
  local site count i
  for entry in "${sites[@]}"; do
    site="${entry%%:*}" count="${entry##*:}"
    for i in $(seq 1 "$count"); do
      cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: $site-rack-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels:
    kubernetes.io/hostname: $site-rack-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    topology.kubernetes.io/zone: $site
status:
  capacity: {cpu: "$node_cpu", memory: $node_memory, pods: "$node_pods", ephemeral-storage: 1800Gi}
  allocatable: {cpu: "$node_cpu", memory: $node_memory, pods: "$node_pods", ephemeral-storage: 1800Gi}
YAML
    done
  done
}

up() {
  mkdir -p "$dev"
  say "control-plane binaries (built once into the cache; cold builds take a while)"
  local bins
  bins="$(bin_dir)"
  export PATH="$bins:$PATH"
  say "building the operator"
  cargo build --quiet --locked -p verbund-operator --bin verbund-operator
  local operator="$CARGO_TARGET_DIR/debug/verbund-operator"

  if [[ -d "$KWOK_WORKDIR/clusters/$cluster" ]] && kubectl --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1; then
    say "the simulated cluster is already running"
  else
    [[ -d "$KWOK_WORKDIR/clusters/$cluster" ]] && kwokctl delete cluster --name "$cluster" >/dev/null 2>&1 || true
    say "starting the simulated cluster (etcd, API server, scheduler, controller-manager, kwok)"
    kwokctl_config > "$dev/kwokctl.yaml"
    KWOK_KUBECTL_BINARY="$bins/kubectl" kwokctl create cluster --name "$cluster" --runtime binary \
      --kubeconfig "$kubeconfig" \
      --kube-apiserver-binary "$bins/kube-apiserver" \
      --kube-controller-manager-binary "$bins/kube-controller-manager" \
      --kube-scheduler-binary "$bins/kube-scheduler" \
      --kwok-controller-binary "$bins/kwok" --etcd-binary "$bins/etcd" \
      --kube-authorization --kube-admission --config "$dev/kwokctl.yaml" --wait 120s \
      >"$dev/kwokctl.log" 2>&1 || { tail -20 "$dev/kwokctl.log"; exit 1; }
  fi
  local k=(kubectl --kubeconfig "$kubeconfig")
  say "three sites of fake rack servers"
  nodes_yaml | "${k[@]}" apply --server-side -f - >/dev/null
  "${k[@]}" wait --for=condition=Ready node --all --timeout=120s >/dev/null

  say "installing the CRDs"
  "${k[@]}" apply --server-side -f "$root/crds/" >/dev/null
  "${k[@]}" wait --for=condition=Established crd --all --timeout=60s >/dev/null

  if operator_running; then
    say "restarting the operator with the current build"
    kill -TERM "$(cat "$dev/operator.pid")"
    for _ in $(seq 50); do operator_running || break; sleep 0.2; done
  fi
  say "starting the operator (log: .dev/operator.log)"
  KUBECONFIG="$kubeconfig" nohup "$operator" run --admin-addr "$admin_addr" \
    --catalog-addr "$catalog_addr" --directory-addr "$directory_addr" \
    >"$dev/operator.log" 2>&1 </dev/null &
  echo $! >"$dev/operator.pid"
  for _ in $(seq 300); do
    curl -fs "http://$admin_addr/readyz" >/dev/null 2>&1 && break
    operator_running || { tail -20 "$dev/operator.log"; echo "the operator exited" >&2; exit 1; }
    sleep 0.2
  done

  start_prometheus

  say "applying examples/saarland/: sites, baselines, tenants"
  local ex="$root/examples/saarland"
  for f in "$ex"/00-*.yaml "$ex"/10-*.yaml "$ex"/20-*.yaml; do
    "${k[@]}" apply --server-side -f "$f" >/dev/null
  done
  "${k[@]}" wait --for=condition=Ready site,tenant,securitybaseline --all --timeout=180s >/dev/null
  say "applying the portal services into the tenants' namespaces"
  for f in "$ex"/3*.yaml; do
    "${k[@]}" apply --server-side -f "$f" >/dev/null
  done
  say "waiting until every portal service is Ready"
  "${k[@]}" wait --for=condition=Ready portalservice --all -A --timeout=300s >/dev/null
  tour
}

tour() {
  local k=(kubectl --kubeconfig "$kubeconfig")
  local ready_services total_services
  total_services="$("${k[@]}" get portalservice -A --no-headers | wc -l)"
  ready_services="$("${k[@]}" get portalservice -A -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
  cat <<TOUR

$(say "all Ready: the Saarland pool is running")

  kubeconfig     export KUBECONFIG=$kubeconfig
  operator       log .dev/operator.log; metrics http://$admin_addr/metrics
  catalogue      $(bin_dir)/grpcurl -plaintext $catalog_addr list
  directory      http://$directory_addr  (the online services, for citizens)
  prometheus     http://$prometheus_addr  (rules and alerts of dashboards/verbund-rules.yaml)
                 e.g. http://$prometheus_addr/graph?g0.expr=verbund_portalservice_replicas_ready
  services       $ready_services of $total_services portal services Ready

Nodes per site (from the cluster):
$("${k[@]}" get nodes -L topology.kubernetes.io/zone --no-headers | awk '{print $NF}' | sort | uniq -c | awk '{printf "  %-8s %s nodes\n", $2, $1}')

$("${k[@]}" get site,tn,sbl,ps -A)

Try a workload the baseline refuses (no hardening at all, in a namespace bound to
grundschutz-hoch); the API server answers with the rule and its BSI requirement:
  kubectl --kubeconfig $kubeconfig -n sb-buergerdienste create deployment root-shell --image=registry.saarland.de/tools/shell:1.0

Stop everything:  make dev-down
TOUR
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  tour) tour ;;
  *) echo "usage: $0 up|down|tour" >&2; exit 2 ;;
esac
