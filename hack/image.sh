#!/usr/bin/env bash
# Builds the operator's OCI image without a container engine daemon and writes it as an OCI
# archive outside the work tree:
#   a static binary (glibc, +crt-static), FROM scratch, user 65532, OCI labels; buildah with
#   its storage under the cache folder, so nothing lands in the system's container storage.
# Prints the archive's path on stdout.
#
#   hack/image.sh            build (nothing to do when binary and archive are current)
#   hack/image.sh --path     only print where the archive is
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[image] %s\n' "$*" >&2; }

version="$(sed -nE 's/^version *= *"(.*)"/\1/p' Cargo.toml | head -1)"
image_dir="${VERBUND_IMAGE_DIR:-$HOME/.cache/verbund/image}"
archive="$image_dir/verbund-operator-$version.oci.tar"
name="localhost/verbund-operator:$version"
if [[ "${1:-}" == "--path" ]]; then
  echo "$archive"
  exit 0
fi

target="x86_64-unknown-linux-gnu"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/verbund/target}"
target_dir="$CARGO_TARGET_DIR"
log "building a static verbund-operator ($target, +crt-static)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked \
  --target "$target" -p verbund-operator --bin verbund-operator >&2
binary="$target_dir/$target/release/verbund-operator"
if ! ldd "$binary" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
  log "$binary is not statically linked: $(ldd "$binary" 2>&1 | head -3)"; exit 1
fi

revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
digest_input="$(sha256sum "$binary" hack/image/Containerfile | sha256sum | cut -c1-16)-$revision"
stamp="$image_dir/.built-from"
if [[ -f "$archive" && -f "$stamp" && "$(cat "$stamp")" == "$digest_input" ]]; then
  log "$archive is current"
  echo "$archive"
  exit 0
fi

mkdir -p "$image_dir"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/verbund-operator"
cp hack/image/Containerfile "$context/Containerfile"
storage=(--root "$image_dir/storage" --runroot "$image_dir/run" --storage-driver vfs)
log "buildah bud $name"
buildah "${storage[@]}" bud --isolation chroot --quiet \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$name" -f "$context/Containerfile" "$context" >&2
rm -f "$archive"
buildah "${storage[@]}" push --quiet "$name" "oci-archive:$archive:$name" >&2
buildah "${storage[@]}" rmi --all --force >/dev/null 2>&1 || true
echo "$digest_input" > "$stamp"
log "wrote $archive ($(du -h "$archive" | cut -f1))"
echo "$archive"
