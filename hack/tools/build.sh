#!/usr/bin/env bash
# Builds the pinned control-plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd), kwok, kwokctl, helm, grpcurl and dashcheck (the checker of
# dashboards/*.json) into a cache outside the work tree, and prints the folder that holds them
# all.
#
#   hack/tools/build.sh              build what is missing, report progress on stderr
#   hack/tools/build.sh --bin-dir    the same, then print the binaries' folder on stdout
#
# The cache (VERBUND_TOOLS_CACHE, default ~/.cache/verbund/tools) is keyed by each Go module's
# go.mod/go.sum, the version stamps and the Go version, so a warm machine builds nothing and
# a change of pin builds afresh beside the old binaries. When KUBEBUILDER_ASSETS names a folder
# holding kube-apiserver, etcd and kubectl, those three are taken from it instead.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${VERBUND_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/verbund/tools}"
print_bin_dir=false
[[ "${1:-}" == "--bin-dir" ]] && print_bin_dir=true

# Versions stamped into the binaries. kwokctl reads `kube-apiserver --version` to choose its
# flags, and clients read /version, so an unstamped v0.0.0-master would mislead both.
KUBE_VERSION="v1.37.2"
KUBE_MAJOR="1"
KUBE_MINOR="37"

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "Go is not installed; the control-plane binaries are built from Go modules"
mkdir -p "$cache"

# One lock for the whole cache: test binaries started in parallel wait for one build.
exec 9>"$cache/.lock"
flock 9

go_version="$(go env GOVERSION)"

kube_ldflags() {
  local date="2026-01-01T00:00:00Z" x
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$KUBE_MAJOR -X $pkg.gitMinor=$KUBE_MINOR"
    x+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  printf '%s' "-s -w$x"
}

# module_key MODULE LDFLAGS: a short hash of everything that decides the module's binaries.
module_key() {
  { cat "$here/$1/go.mod" "$here/$1/go.sum"; find "$here/$1" -name '*.go' -print0 | sort -z | xargs -0 cat;
    echo "$2"; echo "$go_version"; } | sha256sum | cut -c1-12
}

# build MODULE LDFLAGS NAME=PACKAGE...: builds the named binaries that are missing from the
# module's cache folder, all in one `go build` so shared packages compile once.
build() {
  local module="$1" ldflags="$2"; shift 2
  local dir="$cache/$module-$(module_key "$module" "$ldflags")"
  local missing=() pkgs=() spec name pkg
  for spec in "$@"; do
    name="${spec%%=*}"; pkg="${spec#*=}"
    [[ -x "$dir/$name" ]] || { missing+=("$name"); pkgs+=("$pkg"); }
  done
  if ((${#missing[@]} == 0)); then
    log "$module: up to date in $dir"
  else
    log "$module: building ${missing[*]} (cold builds take minutes; progress every 100 packages)"
    local tmp; tmp="$(mktemp -d "$cache/.build-XXXXXX")"
    local started=$SECONDS buildlog="$tmp/build.log"
    if ! (cd "$here/$module" && CGO_ENABLED=0 go build -trimpath -v -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}") \
      2> >(tee "$buildlog" | awk -v m="$module" '{ n++ } n % 100 == 0 { printf "[tools] %s: %d packages compiled\n", m, n > "/dev/stderr"; fflush() }'); then
      sleep 1
      tail -n 30 "$buildlog" >&2
      rm -rf "$tmp"
      die "$module: go build failed (log above)"
    fi
    mkdir -p "$dir"
    local i
    for i in "${!missing[@]}"; do
      # go build names each binary after its package's last element.
      mv "$tmp/$(basename "${pkgs[$i]}")" "$dir/${missing[$i]}"
    done
    rm -rf "$tmp"
    log "$module: built ${missing[*]} in $((SECONDS - started))s"
  fi
  for spec in "$@"; do bins["${spec%%=*}"]="$dir/${spec%%=*}"; done
}

declare -A bins=()

kube_cmds=(kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager
           kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler)
assets="${KUBEBUILDER_ASSETS:-}"
if [[ -n "$assets" && -x "$assets/kube-apiserver" && -x "$assets/etcd" && -x "$assets/kubectl" ]]; then
  log "using kube-apiserver, etcd and kubectl from KUBEBUILDER_ASSETS=$assets"
  for name in kube-apiserver etcd kubectl; do bins[$name]="$assets/$name"; done
else
  [[ -n "$assets" ]] && log "KUBEBUILDER_ASSETS=$assets lacks kube-apiserver, etcd or kubectl; building them"
  kube_cmds+=(kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver
              kubectl=k8s.io/kubernetes/cmd/kubectl
              etcd=./etcd)
fi
build kube "$(kube_ldflags)" "${kube_cmds[@]}"
build kwok "-s -w" kwok=sigs.k8s.io/kwok/cmd/kwok kwokctl=sigs.k8s.io/kwok/cmd/kwokctl
build helm "-s -w" helm=helm.sh/helm/v4/cmd/helm
build grpcurl "-s -w" grpcurl=github.com/fullstorydev/grpcurl/cmd/grpcurl
build dashcheck "-s -w" dashcheck=verbund.saarland.de/hack/tools/dashcheck

# One folder of links to the exact binaries chosen above, named after what they link to.
set_key="$(for n in $(printf '%s\n' "${!bins[@]}" | sort); do echo "$n=${bins[$n]}"; done | sha256sum | cut -c1-12)"
bin_dir="$cache/bin-$set_key"
if [[ ! -d "$bin_dir" ]]; then
  tmp="$(mktemp -d "$cache/.bin-XXXXXX")"
  for n in "${!bins[@]}"; do ln -s "${bins[$n]}" "$tmp/$n"; done
  mv -T "$tmp" "$bin_dir"
fi
log "binaries in $bin_dir"
$print_bin_dir && printf '%s\n' "$bin_dir"
exit 0
