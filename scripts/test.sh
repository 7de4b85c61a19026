#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, vet, the linter, unit and
# integration tests with the race detector, brief fuzzing, and the
# end-to-end suite against the real registry, cosign, crane, skopeo and
# versitygw.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...
go vet -tags e2e ./e2e/... ./internal/store/drivertest/

# The pinned tools: the linter now, the CLIs for the end-to-end suite.
AUTHZ_E2E_TOOLS=$(bash scripts/tools.sh)
export AUTHZ_E2E_TOOLS

echo "== golangci-lint (.golangci.yml)"
"$AUTHZ_E2E_TOOLS/golangci-lint" run ./...

echo "== static build (as the Dockerfile does)"
CGO_ENABLED=0 go build -trimpath -o /tmp/authz-proxy-static ./cmd/authz-proxy
if ldd /tmp/authz-proxy-static >/dev/null 2>&1; then
  echo "the binary is dynamically linked; the distroless/static image could not run it"; exit 1
fi
/tmp/authz-proxy-static version

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== fuzz (50,000 inputs each; a count, not a time, so a loaded machine cannot fail it)"
# Each target in its own package: several packages have a FuzzParse.
# Minimizing each new interesting input may take a minute by default
# (pattern's large globs did); 5 s keeps the run short, and a failure still
# prints its input. Their files go to memory where the machine has
# /dev/shm: a target that starts a decision log on each input fsyncs it
# and its state four times, minutes for 50,000 inputs on a disk.
fuzztmp=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$fuzztmp"' EXIT
while IFS=: read -r file fn; do
  echo "-- ${fn#func } ./$(dirname "$file")"
  TMPDIR=$fuzztmp go test -run='^$' -fuzz="^${fn#func }\$" -fuzztime=50000x -fuzzminimizetime=5s "./$(dirname "$file")" </dev/null
done < <(grep -rHoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' internal | sort)

echo "== end to end"
go test -tags e2e -count=1 -v -timeout 20m ./e2e/...
# The store on S3 (versitygw): distribution's driver conformance suite, and
# two stores filling one bucket at once.
go test -tags e2e -race -count=1 -timeout 10m ./internal/store/drivertest/
