#!/usr/bin/env bash
# Installs what the build and the tests need and the machine lacks; does nothing when all is
# there. Safe to run any number of times.
set -euo pipefail

log() { printf '[deps] %s\n' "$*" >&2; }

# Go builds the control-plane binaries (hack/tools). The pinned modules say `go 1.26.0`; an
# older Go fetches that toolchain through the module proxy by itself (GOTOOLCHAIN=auto).
command -v go >/dev/null || { log "Go is required (https://go.dev/dl/)"; exit 1; }

# Rust: the toolchain named in rust-toolchain.toml, with rustfmt and clippy.
command -v rustup >/dev/null || { log "rustup is required (https://rustup.rs)"; exit 1; }
cd "$(dirname "${BASH_SOURCE[0]}")/.."
toolchain="$(sed -nE 's/^channel *= *"(.*)"/\1/p' rust-toolchain.toml)"
if ! rustup component list --installed --toolchain "$toolchain" 2>/dev/null | grep -q '^clippy' ||
   ! rustup component list --installed --toolchain "$toolchain" 2>/dev/null | grep -q '^rustfmt'; then
  log "installing Rust $toolchain with rustfmt and clippy"
  rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy >&2
fi

# Debian packages used by the tests.
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
log "all present"
