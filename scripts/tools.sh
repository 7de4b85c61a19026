#!/usr/bin/env bash
# Installs the pinned tools of the test suite, once per machine: the linter
# (golangci-lint), and what the end-to-end suite drives: the distribution
# registry (the upstream), the cosign v2 CLI, the cosign v3 CLI (as
# cosign3), crane, the notation CLI, the OCI distribution-spec conformance
# suite, versitygw (an S3 server over a folder, for the store's s3 driver),
# helm v4 (lints and renders the chart), and skopeo and chromium from
# Debian. Prints the folder that holds the Go-built tools.
# Reuses earlier builds when their versions match (CI machines are reused).
# With --bench, also the load generator of bench/run.sh.
set -euo pipefail

REGISTRY_VERSION=v3.1.2
CRANE_VERSION=v0.22.1
COSIGN_VERSION=v2.6.5
COSIGN3_VERSION=v3.1.3
NOTATION_VERSION=v1.3.2
VERSITYGW_VERSION=v1.8.0
VEGETA_VERSION=v12.13.0
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
GOLANGCI_LINT_VERSION=v2.15.0
HELM_VERSION=v4.3.2

tools=${AUTHZ_TOOLS_DIR:-$HOME/.cache/authz-proxy-tools}
mkdir -p "$tools/bin"

install() { # install NAME MODULE@VERSION: the command is installed as NAME
  local stamp="$tools/bin/.$1.version"
  if [ -x "$tools/bin/$1" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$2" ]; then
    return
  fi
  echo "tools: building $2 (a few minutes, once)" >&2
  # Built into a folder of its own, then moved: cosign v2 and v3 are both
  # "cosign".
  local build
  build=$(mktemp -d)
  (cd /tmp && GOBIN="$build" GOFLAGS= go install "$2")
  mv "$build"/* "$tools/bin/$1"
  rmdir "$build"
  echo "$2" > "$stamp"
}

build() { # build NAME PACKAGE VERSION: in a throw-away module, for commands
  # that `go install` refuses (notation's go.mod has replace directives)
  local stamp="$tools/bin/.$1.version"
  if [ -x "$tools/bin/$1" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$2@$3" ]; then
    return
  fi
  echo "tools: building $2@$3 (a minute, once)" >&2
  local mod
  mod=$(mktemp -d)
  (cd "$mod" && go mod init x >/dev/null 2>&1 && GOFLAGS= go get "$2@$3" && GOFLAGS= go build -o "$mod/$1" "$2")
  mv "$mod/$1" "$tools/bin/$1"
  rm -rf "$mod"
  echo "$2@$3" > "$stamp"
}

install golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION >&2
install registry github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION >&2
install crane github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION >&2
install cosign github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION >&2
install cosign3 github.com/sigstore/cosign/v3/cmd/cosign@$COSIGN3_VERSION >&2
install conformance github.com/opencontainers/distribution-spec/conformance@$CONFORMANCE_VERSION >&2
build notation github.com/notaryproject/notation/cmd/notation $NOTATION_VERSION >&2
install versitygw github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION >&2
install helm helm.sh/helm/v4/cmd/helm@$HELM_VERSION >&2
if [ "${1:-}" = --bench ]; then
  install vegeta github.com/tsenart/vegeta/v12@$VEGETA_VERSION >&2
fi

# From Debian: skopeo (pulls like CRI-O and podman) and chromium (opens the
# HTML report headless); with --bench, wrk (the leaner load generator of
# bench/run.sh's cross-check).
missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${1:-}" = --bench ] && ! command -v wrk >/dev/null 2>&1; then missing+=(wrk); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "tools: installing ${missing[*]} from Debian" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

echo "$tools/bin"
