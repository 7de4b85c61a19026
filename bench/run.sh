#!/usr/bin/env bash
# Side-by-side benchmark: the distribution registry direct, a minimal Go
# reverse proxy (bench/minproxy, the floor of any Go proxy) and authz-proxy,
# in one run on this machine, loaded by the same pinned load generator
# (vegeta, closed loop, CONCURRENCY workers). Prints requests/s, p50, p99 and
# the ratios. Not run by CI: its numbers depend on the machine.
#
#   bash bench/run.sh                 # defaults: 10 s per scenario, 16 workers, 1 GiB blob
#   DURATION=5s BLOB_MIB=256 bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-16}
BLOB_MIB=${BLOB_MIB:-1024}
COLD=${COLD:-6000}

tools=$(bash scripts/tools.sh --bench)
work=$(mktemp -d /tmp/authz-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 200); do curl -fso /dev/null "http://$1/v2/" && return 0; sleep 0.05; done; echo "$1 did not come up" >&2; exit 1; }

echo "building..." >&2
go build -o "$work/authz-proxy" ./cmd/authz-proxy
go build -o "$work/minproxy" ./bench/minproxy
go build -o "$work/seed" ./bench/seed

REG=127.0.0.1:$(port); MIN=127.0.0.1:$(port); AUTHZ=127.0.0.1:$(port)
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: $REG}
YML
"$tools/registry" serve "$work/registry.yml" >"$work/registry.log" 2>&1 & pids+=($!); REGPID=$!
wait_up "$REG"

echo "seeding the registry ($COLD signed images, a $BLOB_MIB MiB blob)..." >&2
"$work/seed" -registry "$REG" -out "$work" -cold "$COLD" -blob-mib "$BLOB_MIB" 2>>"$work/seed.log"
SIGNED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["signed"])' "$work/seed.json")
BLOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blob"])' "$work/seed.json")

cat > "$work/config.yaml" <<YML
listen: {addr: $AUTHZ}
upstreams: [{name: lab, url: "http://$REG", insecure: true}]
cache: {maxEntries: 100000, allowTTL: 1h, denyTTL: 1h}
attestors: [{name: ci, publicKeys: [{file: ci.pub}]}]
policy:
  rules: [{name: bench, images: ["lab/bench/**"], require: [{signature: {attestors: [ci]}}]}]
YML
"$work/minproxy" -listen "$MIN" -upstream "http://$REG" >"$work/minproxy.log" 2>&1 & pids+=($!); MINPID=$!
"$work/authz-proxy" serve --config "$work/config.yaml" >/dev/null 2>"$work/authz.log" & pids+=($!); AUTHZPID=$!
wait_up "$MIN"; wait_up "$AUTHZ"

ACCEPT="Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
# base URL of the repository through each target
declare -A BASE=([direct]="http://$REG/v2/bench/app" [minproxy]="http://$MIN/v2/bench/app" [authz-proxy]="http://$AUTHZ/v2/lab/bench/app")

cputicks() { [ -n "${1:-}" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
pidof_target() { case $1 in *minproxy) echo "$MINPID";; *authz-proxy) echo "$AUTHZPID";; *) echo "$REGPID";; esac; }
attack() { # attack NAME TARGETFILE -> JSON report in $work/NAME.json, CPU ticks of the target in $work/NAME.cpu
  local pid; pid=$(pidof_target "$1"); local t0; t0=$(cputicks "$pid")
  "$tools/vegeta" attack -targets "$2" -rate 0 -workers "$CONCURRENCY" -max-workers "$CONCURRENCY" -duration "$DURATION" -keepalive \
    | "$tools/vegeta" report -type json > "$work/$1.json"
  echo $(( $(cputicks "$pid") - t0 )) > "$work/$1.cpu"
}
target() { printf '%s %s\n%s\n\n' "$1" "$2" "$ACCEPT"; }

for t in direct minproxy authz-proxy; do
  curl -fso /dev/null -H "$ACCEPT" "${BASE[$t]}/manifests/v1"   # warm: verdict, bytes, connections
  target GET "${BASE[$t]}/manifests/$SIGNED" > "$work/digest-$t.targets"
  target GET "${BASE[$t]}/manifests/v1" > "$work/tag-$t.targets"
  target HEAD "${BASE[$t]}/manifests/v1" > "$work/head-$t.targets"
done
for s in digest tag head; do
  for t in direct minproxy authz-proxy; do
    echo "load: $s via $t" >&2
    attack "$s-$t" "$work/$s-$t.targets"
  done
done

# Cold verification: a new signed digest each request, authz-proxy only
# (the others verify nothing), over more digests than the run can use.
while read -r d; do target GET "${BASE[authz-proxy]}/manifests/$d"; done < "$work/cold.txt" > "$work/cold.targets"
echo "load: cold verifications via authz-proxy" >&2
attack cold-authz-proxy "$work/cold.targets"
COLD_REQS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$work/cold-authz-proxy.json")
if [ "$COLD_REQS" -ge "$COLD" ]; then echo "warning: $COLD_REQS cold requests for $COLD digests: some were cached" >&2; fi

# The blob: throughput through each target and each proxy's RSS growth.
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
declare -A MBS GROW
for t in direct minproxy authz-proxy; do
  case $t in minproxy) pid=$MINPID;; authz-proxy) pid=$AUTHZPID;; *) pid=;; esac
  [ -n "$pid" ] && before=$(rss "$pid")
  echo "blob: $BLOB_MIB MiB via $t" >&2
  MBS[$t]=$(curl -fs -o /dev/null -w '%{speed_download}' "${BASE[$t]}/blobs/$BLOB")
  [ -n "$pid" ] && GROW[$t]=$(( ($(hwm "$pid") - before) / 1024 )) || GROW[$t]="-"
done

python3 - "$work" "$CONCURRENCY" "$DURATION" "$BLOB_MIB" "${MBS[direct]}" "${MBS[minproxy]}" "${MBS[authz-proxy]}" "${GROW[minproxy]}" "${GROW[authz-proxy]}" <<'PY'
import json, sys
work, conc, dur, blob_mib = sys.argv[1:5]
mbs = dict(zip(["direct", "minproxy", "authz-proxy"], map(float, sys.argv[5:8])))
grow = {"minproxy": sys.argv[8], "authz-proxy": sys.argv[9]}
import os
tick = os.sysconf("SC_CLK_TCK")
def rep(name):
    r = json.load(open(f"{work}/{name}.json"))
    return r["throughput"], r["latencies"]["50th"] / 1e6, r["latencies"]["99th"] / 1e6, r["success"]
def cpu_us(name):
    """CPU time the target process spent per request: robust to a busy machine."""
    r = json.load(open(f"{work}/{name}.json"))
    return int(open(f"{work}/{name}.cpu").read()) / tick * 1e6 / max(r["requests"], 1)
print(f"\nauthz-proxy side by side: concurrency {conc}, {dur} per scenario, one machine\n")
print(f"{'scenario':34} {'target':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ok':>6}  {'vs direct':>9} {'vs minproxy':>11} {'CPU us/req':>10}")
for s, title in [("digest", "manifest GET by digest (cached)"), ("tag", "manifest GET by tag (cached)"), ("head", "manifest HEAD by tag (cached)")]:
    base = {t: rep(f"{s}-{t}") for t in ["direct", "minproxy", "authz-proxy"]}
    for t, (rps, p50, p99, ok) in base.items():
        vd = rps / base["direct"][0]; vm = rps / base["minproxy"][0]
        print(f"{title:34} {t:12} {rps:9.0f} {p50:8.2f} {p99:8.2f} {ok:6.1%}  {vd:8.2f}x {vm:10.2f}x {cpu_us(f'{s}-{t}'):10.0f}")
    print(f"{'':34} {'':12} p99 authz-proxy - minproxy: {base['authz-proxy'][2]-base['minproxy'][2]:+.2f} ms")
rps, p50, p99, ok = rep("cold-authz-proxy")
print(f"{'cold verification (new digest each)':34} {'authz-proxy':12} {rps:9.0f} {p50:8.2f} {p99:8.2f} {ok:6.1%}  {'':9} {'':11} {cpu_us('cold-authz-proxy'):10.0f}")
print(f"\nblob of {blob_mib} MiB, one stream:")
for t in ["direct", "minproxy", "authz-proxy"]:
    g = grow.get(t, "-")
    print(f"  {t:12} {mbs[t]/1e6:8.0f} MB/s  {mbs[t]/mbs['minproxy']:5.2f}x minproxy  peak RSS growth {g} MiB")
PY
