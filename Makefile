# Verbund: the two commands of the README, and the steps they are made of.
#
# Heavy caches live outside the work tree, so a fresh clone on a warm machine builds nothing
# twice: the control-plane binaries (VERBUND_TOOLS_CACHE) and Cargo's build output
# (CARGO_TARGET_DIR).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export VERBUND_TOOLS_CACHE ?= $(HOME)/.cache/verbund/tools
export CARGO_TARGET_DIR ?= $(HOME)/.cache/verbund/target

# Debian packages the tests use: buildah and skopeo build and read the image, podman and runc
# run it.
APT_PACKAGES := buildah skopeo podman runc prometheus chromium

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  make %-10s %s\n", $$1, $$2 }'

.PHONY: deps
deps: ## Install what is missing (Rust components, Debian packages)
	@hack/install-deps.sh $(APT_PACKAGES)

.PHONY: tools
tools: deps ## Build the pinned control-plane binaries into the cache (nothing when warm)
	@hack/tools/build.sh

.PHONY: lint
lint: deps ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

.PHONY: test
test: deps tools lint ## Everything CI checks: formatting, clippy, unit, integration and end-to-end tests
	VERBUND_TOOLS_BIN="$$(hack/tools/build.sh --bin-dir 2>/dev/null)" \
	  cargo test --workspace --locked --no-fail-fast

.PHONY: crds
crds: ## Regenerate crds/ and the chart's CRDs and RBAC rules from the Rust types
	cargo run --quiet -p verbund-operator -- crd --output-dir crds
	cargo run --quiet -p verbund-operator -- crd --output-dir charts/verbund/crds
	cargo run --quiet -p verbund-operator -- rbac --role operator > charts/verbund/files/operator-rules.yaml
	cargo run --quiet -p verbund-operator -- rbac --role tenant-admin > charts/verbund/files/tenant-admin-rules.yaml

.PHONY: image
image: deps ## Build the operator's OCI image (static binary, FROM scratch) as an archive outside the work tree
	@hack/image.sh

.PHONY: dev
dev: deps ## Start a simulated pooled data centre with the operator on it (leaves it running)
	@hack/dev.sh up

.PHONY: dev-down
dev-down: ## Stop what make dev started; nothing keeps running or listening
	@hack/dev.sh down
