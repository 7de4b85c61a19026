# Shared by bench/run.sh and bench/soak.sh: builds the binaries, starts the
# distribution registry (with its Prometheus metrics on REG_METRICS, which
# count the requests it answers), seeds it ($COLD signed images, a $BLOB_MIB
# MiB blob, a $COLD_BLOB_MIB MiB blob), and starts bench/minproxy and
# authz-proxy in front of it (with the profiler on its metrics listener).
# With BASELINE set to another source tree of authz-proxy (e.g. a
# `git worktree add --detach /tmp/base <commit>`), that build runs beside
# it too, with the same configuration, as the baseline. Sets REG,
# REG_METRICS, MIN, AUTHZ, METRICS, BASE_ADDR (host:port), REGPID, MINPID,
# AUTHZPID, BASEPID, SIGNED, BLOB, COLD_BLOB, work, tools; start_proxy
# starts (or restarts) one of the proxies.
tools=$(bash scripts/tools.sh --bench)
work=$(mktemp -d "${BENCH_TMP:-/tmp}/authz-bench.XXXXXX")   # BENCH_TMP: another folder for the run
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 200); do curl -fso /dev/null "http://$1/v2/" && return 0; sleep 0.05; done; echo "$1 did not come up" >&2; exit 1; }

echo "building..." >&2
go build -o "$work/authz-proxy" ./cmd/authz-proxy
go build -o "$work/minproxy" ./bench/minproxy
go build -o "$work/seed" ./bench/seed
if [ -n "${BASELINE:-}" ]; then
  (cd "$BASELINE" && go build -o "$work/authz-proxy-baseline" ./cmd/authz-proxy)
fi

REG=127.0.0.1:$(port); REG_METRICS=127.0.0.1:$(port); MIN=127.0.0.1:$(port); AUTHZ=127.0.0.1:$(port)
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: $REG, debug: {addr: $REG_METRICS, prometheus: {enabled: true, path: /metrics}}}
YML
"$tools/registry" serve "$work/registry.yml" >"$work/registry.log" 2>&1 & pids+=($!); REGPID=$!
wait_up "$REG"

echo "seeding the registry ($COLD signed images, a $BLOB_MIB MiB blob, a ${COLD_BLOB_MIB:-256} MiB blob)..." >&2
"$work/seed" -registry "$REG" -out "$work" -cold "$COLD" -blob-mib "$BLOB_MIB" -cold-blob-mib "${COLD_BLOB_MIB:-256}" -tuf "$work/tuf" 2>>"$work/seed.log"
SIGNED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["signed"])' "$work/seed.json")
BLOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blob"])' "$work/seed.json")
COLD_BLOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["coldBlob"])' "$work/seed.json")

METRICS=127.0.0.1:$(port)
cat > "$work/config.yaml" <<YML
listen: {addr: $AUTHZ}
metrics: {addr: $METRICS}
limits: {manifestCacheBytes: ${MANIFEST_CACHE_BYTES:-67108864}}
upstreams: [{name: lab, url: "http://$REG", insecure: true}]
cache: {maxEntries: ${MAX_ENTRIES:-100000}, allowTTL: 1h, denyTTL: 1h}
attestors: [{name: ci, publicKeys: [{file: ci.pub}]}]
policy:
  rules:
    - {name: bench, images: ["lab/bench/**"], require: [{signature: {attestors: [ci]}}]}
    - {name: open, images: ["lab/open/**"], action: allow}
YML
BASE_ADDR=127.0.0.1:$(port); BASE_METRICS=127.0.0.1:$(port)
sed -e "s|addr: $AUTHZ|addr: $BASE_ADDR|; s|addr: $METRICS|addr: $BASE_METRICS|" "$work/config.yaml" > "$work/config-baseline.yaml"
# TUF_ROOT=1: a keyless attestor whose trust root a TUF repository (a
# local folder the seed wrote) keeps current, refreshed every TUF_REFRESH
# (1s), for a rule that the load never matches: the judged path with a
# TUF root configured and refreshing. Not in the baseline's configuration:
# BASELINE=. TUF_ROOT=1 compares the two, round by round.
if [ -n "${TUF_ROOT:-}" ]; then
  sed -i "s|^attestors: \[|trustRoots: [{name: bench, tuf: {mirror: \"file://$work/tuf\", root: $work/tuf/1.root.json, refresh: ${TUF_REFRESH:-1s}}}]\nattestors: [{name: release, keyless: {issuer: https://ci.example, subject: release@ci.example, trustRoots: [bench]}}, |; s|^    - {name: open,|    - {name: keyless, images: [\"lab/keyless/**\"], require: [{signature: {attestors: [release]}}]}\n    - {name: open,|" "$work/config.yaml"
fi
# The profiler, for `go tool pprof http://$METRICS/debug/pprof/profile`
# (KEEP=1 keeps the binary for it); the baseline may not have one.
sed -i "s|^metrics: {addr: $METRICS}|metrics: {addr: $METRICS, pprof: true}|" "$work/config.yaml"

# start_proxy authz-proxy|baseline: starts that proxy, or starts it anew
# (every cache empty), and waits until it serves.
AUTHZPID=; BASEPID=
start_proxy() {
  local pid
  case $1 in
    authz-proxy) pid=$AUTHZPID;;
    *) pid=$BASEPID;;
  esac
  if [ -n "$pid" ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
  case $1 in
    authz-proxy)
      "$work/authz-proxy" serve --config "$work/config.yaml" >>"$work/decisions.jsonl" 2>>"$work/authz.log" & pids+=($!); AUTHZPID=$!
      wait_up "$AUTHZ";;
    *)
      "$work/authz-proxy-baseline" serve --config "$work/config-baseline.yaml" >>"$work/decisions-baseline.jsonl" 2>>"$work/baseline.log" & pids+=($!); BASEPID=$!
      wait_up "$BASE_ADDR";;
  esac
}
"$work/minproxy" -listen "$MIN" -upstream "http://$REG" >"$work/minproxy.log" 2>&1 & pids+=($!); MINPID=$!
wait_up "$MIN"
start_proxy authz-proxy
if [ -n "${BASELINE:-}" ]; then start_proxy baseline; fi

ACCEPT="Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
target() { printf '%s %s\n%s\n\n' "$1" "$2" "$ACCEPT"; }
