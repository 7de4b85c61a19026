#!/usr/bin/env bash
# Side-by-side benchmark: the distribution registry direct, a minimal Go
# reverse proxy (bench/minproxy, the floor of any Go proxy) and authz-proxy,
# in one run on this machine, loaded by the same pinned load generator
# (vegeta, closed loop, CONCURRENCY workers). Prints requests/s, p50, p99,
# the CPU each target spent per request, and the ratios (GET by digest
# also under wrk, a leaner load generator, as a cross-check, beside
# bench/minproxy -static: net/http alone answering the manifest from memory,
# the ceiling of any Go server on this machine); then cold
# decisions (a new signed digest each request) over COLD_ROUNDS rounds, each
# on a freshly started proxy, with the upstream requests each decision cost
# (counted by the registry) and the registry's own CPU; then cached pulls
# through authz-proxy with the decision log's hash chain off and on, side by
# side; then the content store: a second authz-proxy with a filesystem store
# serving the large blob against the registry serving it from its own disk,
# and CLIENTS concurrent cold pulls of another blob (COLD_BLOB_MIB) through
# it, counting its upstream fetches; then the store's tags and outages: a
# manifest GET by an immutable tag against the registry's own GET by tag,
# alternated, and, last, the registry stopped: images pulled before through
# the store pull again with crane and skopeo, those never pulled get 503.
# Not run by CI: its numbers depend on the machine.
#
# BASELINE=<source tree> runs that build of authz-proxy beside this one in
# the manifest scenarios (cached and cold, alternating the order round by
# round), e.g. the main branch before a change:
#
#   git worktree add --detach /tmp/base main && BASELINE=/tmp/base bash bench/run.sh
#
# PARTS picks what runs (default: all of manifests blob chain store scale).
#
#   bash bench/run.sh                 # defaults: 10 s per scenario, 16 workers, 1 GiB blob, 32 x 256 MiB
#   DURATION=5s BLOB_MIB=256 ROUNDS=5 COLD=500 bash bench/run.sh
#   PARTS=manifests COLD_ROUNDS=5 BASELINE=/tmp/base bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=bench${PYTHONPATH:+:$PYTHONPATH}   # the reports read the runs through bench/report.py

DURATION=${DURATION:-10s}
COLD_DURATION=${COLD_DURATION:-$DURATION}
COLD_ROUNDS=${COLD_ROUNDS:-3}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-16}
BLOB_MIB=${BLOB_MIB:-1024}
# Enough new digests for a round of the default 10 s on a quiet 2-core
# machine (about 900 cold decisions a second): a round that runs out warns.
COLD=${COLD:-12000}
COLD_BLOB_MIB=${COLD_BLOB_MIB:-256}
CLIENTS=${CLIENTS:-32}
PARTS=${PARTS:-manifests blob chain store scale}
part() { [[ " $PARTS " == *" $1 "* ]]; }

source bench/lib.sh

# base URL of the repository through each target
declare -A BASE=([direct]="http://$REG/v2/bench/app" [minproxy]="http://$MIN/v2/bench/app" [authz-proxy]="http://$AUTHZ/v2/lab/bench/app" [baseline]="http://$BASE_ADDR/v2/lab/bench/app")
TARGETS=(direct minproxy authz-proxy); PROXIES=(authz-proxy)
if [ -n "${BASELINE:-}" ]; then TARGETS=(direct minproxy baseline authz-proxy); PROXIES=(baseline authz-proxy); fi

cputicks() { [ -n "${1:-}" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
pidof_target() { case $1 in *minproxy) echo "$MINPID";; static) echo "$STATICPID";; *baseline*) echo "$BASEPID";; *authz-proxy*) echo "$AUTHZPID";; immutable-store*) echo "$STOREPID";; *) echo "$REGPID";; esac; }
# the registry's count of requests answered, by handler and method
regcounts() { curl -fs "http://$REG_METRICS/metrics" | awk '/^registry_http_request_duration_seconds_count/ {print $1, $2}'; }
attack() { # attack NAME TARGETFILE [DURATION [PID]] -> JSON report in $work/NAME.json, CPU ticks of the target (.cpu; PID, else named by NAME) and of the registry (.regcpu), the registry's requests before and after (.req0, .req1)
  local pid; pid=${4:-$(pidof_target "$1")}; local t0 r0; t0=$(cputicks "$pid"); r0=$(cputicks "$REGPID")
  regcounts > "$work/$1.req0"
  "$tools/vegeta" attack -targets "$2" -rate 0 -workers "$CONCURRENCY" -max-workers "$CONCURRENCY" -duration "${3:-$DURATION}" -keepalive \
    | "$tools/vegeta" report -type json > "$work/$1.json"
  echo $(( $(cputicks "$pid") - t0 )) > "$work/$1.cpu"
  echo $(( $(cputicks "$REGPID") - r0 )) > "$work/$1.regcpu"
  regcounts > "$work/$1.req1"
}

if part manifests; then
for t in "${TARGETS[@]}"; do
  curl -fso /dev/null -H "$ACCEPT" "${BASE[$t]}/manifests/v1"   # warm: verdict, bytes, connections
  target GET "${BASE[$t]}/manifests/$SIGNED" > "$work/digest-$t.targets"
  target GET "${BASE[$t]}/manifests/v1" > "$work/tag-$t.targets"
  target HEAD "${BASE[$t]}/manifests/v1" > "$work/head-$t.targets"
done
for s in digest tag head; do
  for t in "${TARGETS[@]}"; do
    echo "load: $s via $t" >&2
    attack "$s-$t" "$work/$s-$t.targets"
  done
done

# A cross-check of GET by digest with a leaner load generator, wrk (C,
# epoll): whether vegeta's own CPU on the shared cores explains the ratio;
# and the ceiling of any Go server on this machine, bench/minproxy -static
# answering the manifest's bytes from memory (net/http and nothing else).
printf 'wrk.headers["Accept"] = "%s"\n' "${ACCEPT#Accept: }" > "$work/accept.lua"
curl -fso "$work/signed.manifest" -H "$ACCEPT" "${BASE[direct]}/manifests/$SIGNED"
STATIC=127.0.0.1:$(port)
"$work/minproxy" -listen "$STATIC" -static "$work/signed.manifest" >>"$work/minproxy.log" 2>&1 & pids+=($!); STATICPID=$!
wait_up "$STATIC"
BASE[static]="http://$STATIC/v2/bench/app"
for t in direct static authz-proxy; do
  echo "load: digest via $t (wrk)" >&2
  pid=$(pidof_target "$t"); c0=$(cputicks "$pid")
  wrk -t2 -c"$CONCURRENCY" -d"$DURATION" -s "$work/accept.lua" "${BASE[$t]}/manifests/$SIGNED" > "$work/wrk-$t.out"
  echo $(( $(cputicks "$pid") - c0 )) > "$work/wrk-$t.cpu"
done
echo "load: digest via static" >&2
target GET "${BASE[static]}/manifests/$SIGNED" > "$work/digest-static.targets"
attack digest-static "$work/digest-static.targets" "$DURATION" "$STATICPID"

# Cold decisions: a new signed digest (.sig tag scheme) each request, over
# more digests than a round can use, through each proxy freshly started
# (nothing cached), alternating which goes first round by round.
for r in $(seq "$COLD_ROUNDS"); do
  order=("${PROXIES[@]}"); [ $((r % 2)) = 0 ] && order=($(printf '%s\n' "${PROXIES[@]}" | tac))
  for t in "${order[@]}"; do
    start_proxy "$t"
    curl -fso /dev/null -H "$ACCEPT" "${BASE[$t]}/manifests/v1"   # connections, token, the referrers probe
    while read -r d; do target GET "${BASE[$t]}/manifests/$d"; done < "$work/cold.txt" > "$work/cold-$t.targets"
    echo "load: cold decisions via $t, round $r" >&2
    attack "cold-$t-$r" "$work/cold-$t.targets" "$COLD_DURATION"
    n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$work/cold-$t-$r.json")
    if [ "$n" -ge "$COLD" ]; then echo "warning: $n cold requests for $COLD digests: some were cached (raise COLD)" >&2; fi
  done
done

python3 - "$work" "$CONCURRENCY" "$DURATION" "$COLD_DURATION" "$COLD_ROUNDS" "${TARGETS[*]}" "${PROXIES[*]}" <<'PY'
import json, statistics, sys
from report import vegeta, wrk
work, conc, dur, cold_dur, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
targets, proxies = sys.argv[6].split(), sys.argv[7].split()
rep = lambda name: vegeta(work, name)
def reqs(name):
    """The registry's requests during the run, by handler and method."""
    def read(f):
        out = {}
        for line in open(f):
            k, v = line.split()
            labels = dict(p.split("=") for p in k[k.index("{") + 1:-1].replace('"', "").split(","))
            key = labels["handler"] + " " + labels["method"].upper()
            out[key] = out.get(key, 0) + float(v)
        return out
    a, b = read(f"{work}/{name}.req0"), read(f"{work}/{name}.req1")
    return {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0) > 0}
print(f"\nauthz-proxy side by side: concurrency {conc}, {dur} per scenario, one machine\n")
print(f"{'scenario':34} {'target':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ok':>6}  {'vs direct':>9} {'vs minproxy':>11} {'CPU us/req':>10}")
summary_out = {}
for s, title in [("digest", "manifest GET by digest (cached)"), ("tag", "manifest GET by tag (cached)"), ("head", "manifest HEAD by tag (cached)")]:
    base = {t: rep(f"{s}-{t}") for t in targets}
    a, d, m = base["authz-proxy"], base["direct"], base["minproxy"]
    summary_out[s] = {"rps": a.rps, "direct": a.rps / d.rps, "minproxy": a.rps / m.rps, "cpu": a.cpu, "mincpu": m.cpu}
    for t, x in base.items():
        print(f"{title:34} {t:12} {x.rps:9.0f} {x.p50:8.2f} {x.p99:8.2f} {x.ok:6.1%}  {x.rps / d.rps:8.2f}x {x.rps / m.rps:10.2f}x {x.cpu:10.0f}")
    print(f"{'':34} {'':12} p99 authz-proxy - minproxy: {a.p99 - m.p99:+.2f} ms")
head, tag = summary_out["head"], summary_out["tag"]
print(f"\nHEAD by tag: {head['minproxy']:.2f}x minproxy (target >= 1.5x), {head['rps'] / tag['rps']:.2f}x GET by tag's req/s (target within 20 %: 0.8-1.2x); GET by digest: {summary_out['digest']['direct']:.2f}x direct (target >= 6x)")
(wd, wd_cpu, wd_ok), (wf, wf_cpu, wf_ok), (wa, wa_cpu, wa_ok) = (wrk(work, t) for t in ("direct", "static", "authz-proxy"))
print(f"GET by digest with wrk: direct {wd:.0f} req/s ({wd_cpu:.0f} us CPU/req), authz-proxy {wa:.0f} req/s ({wa_cpu:.0f} us CPU/req): {wa / wd:.2f}x direct, CPU {wd_cpu / wa_cpu:.2f}x less{'' if wd_ok and wa_ok else ' (NOT ALL 2xx)'}")
vf = rep("digest-static").rps / rep("digest-direct").rps
print(f"  the ceiling of a Go server here, net/http answering the manifest from memory: {wf:.0f} req/s ({wf_cpu:.0f} us CPU/req), {wf / wd:.2f}x direct with wrk, {vf:.2f}x with vegeta{'' if wf_ok else ' (NOT ALL 2xx)'}; authz-proxy spends {wa_cpu - wf_cpu:.0f} us/req more (route, policy, metrics, the decision line)")
summary_out["digest"].update(wrk=wa / wd, ceiling=wf / wd, vceiling=vf, above=wa_cpu - wf_cpu)
reg_get = rep("digest-direct").cpu
print(f"\ncold decisions (a new key-signed digest each, .sig tag), {cold_dur} per round, {rounds} rounds, each on a fresh proxy")
print(f"the registry's CPU per manifest GET (by digest, direct, above): {reg_get:.0f} us\n")
print(f"{'target':12} {'round':>5} {'dec/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'ok':>6} {'CPU us/dec':>10} {'vs reg GET':>10} {'upstream req/dec':>17} {'registry CPU us/req':>19}")
summary = {}
for t in proxies:
    rows = []
    for r in range(1, rounds + 1):
        name = f"cold-{t}-{r}"
        x, rq = rep(name), reqs(name)
        n, total = max(x.requests, 1), sum(rq.values())
        detail = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(rq.items()))
        rows.append((x.rps, x.cpu, total / n, x.p50, x.p99))
        # the registry's CPU per request it answered
        print(f"{t:12} {r:5} {x.rps:7.0f} {x.p50:8.2f} {x.p99:8.2f} {x.ok:6.1%} {x.cpu:10.0f} {x.cpu / reg_get:9.2f}x {total / n:17.2f} {x.regcpu * n / max(total, 1):19.0f}   ({detail})")
    med = lambda i: statistics.median(x[i] for x in rows)
    lo = lambda i: min(x[i] for x in rows)
    hi = lambda i: max(x[i] for x in rows)
    summary[t] = (med(0), med(1))
    print(f"{t:12} {'med':>5} {med(0):7.0f} {med(3):8.2f} {med(4):8.2f} {'':6} {med(1):10.0f} {med(1) / reg_get:9.2f}x {med(2):17.2f}   dec/s {lo(0):.0f}-{hi(0):.0f}, CPU us/dec {lo(1):.0f}-{hi(1):.0f}")
if "baseline" in summary:
    b, a = summary["baseline"], summary["authz-proxy"]
    print(f"\nauthz-proxy vs baseline, medians: cold decisions/s {a[0] / b[0]:.2f}x, CPU per cold decision {a[1] / b[1]:.2f}x")
a = summary["authz-proxy"]
print(f"cold decision CPU / the registry's CPU per manifest GET: {a[1] / reg_get:.2f}x (target <= 1.0x)")
summary_out["cold"] = {"rps": a[0], "cpu": a[1], "reg_get": reg_get, "ratio": a[1] / reg_get}
json.dump(summary_out, open(f"{work}/summary-manifests.json", "w"))
PY
fi
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

if part blob; then
# The blob: throughput through each target and each proxy's RSS growth.
declare -A MBS GROW
for t in direct minproxy authz-proxy; do
  case $t in minproxy) pid=$MINPID;; authz-proxy) pid=$AUTHZPID;; *) pid=;; esac
  [ -n "$pid" ] && before=$(rss "$pid")
  echo "blob: $BLOB_MIB MiB via $t" >&2
  MBS[$t]=$(curl -fs -o /dev/null -w '%{speed_download}' "${BASE[$t]}/blobs/$BLOB")
  [ -n "$pid" ] && GROW[$t]=$(( ($(hwm "$pid") - before) / 1024 )) || GROW[$t]="-"
done
python3 - "$BLOB_MIB" "${MBS[direct]}" "${MBS[minproxy]}" "${MBS[authz-proxy]}" "${GROW[minproxy]}" "${GROW[authz-proxy]}" "$work" <<'PY'
import json, sys
blob_mib = sys.argv[1]
mbs = dict(zip(["direct", "minproxy", "authz-proxy"], map(float, sys.argv[2:5])))
grow = {"minproxy": sys.argv[5], "authz-proxy": sys.argv[6]}
print(f"\nblob of {blob_mib} MiB, one stream:")
for t in ["direct", "minproxy", "authz-proxy"]:
    g = grow.get(t, "-")
    print(f"  {t:12} {mbs[t]/1e6:8.0f} MB/s  {mbs[t]/mbs['minproxy']:5.2f}x minproxy  peak RSS growth {g} MiB")
json.dump({"mbs": mbs["authz-proxy"], "minproxy": mbs["authz-proxy"] / mbs["minproxy"], "grow": grow["authz-proxy"]}, open(f"{sys.argv[7]}/summary-blob.json", "w"))
PY
fi

if part store; then
# The content store: authz-proxy with a filesystem store, same policy.
STORE=127.0.0.1:$(port); STORE_METRICS=127.0.0.1:$(port)
sed -e "s|addr: $AUTHZ|addr: $STORE|; s|addr: $METRICS|addr: $STORE_METRICS|" -e 's|insecure: true}]|insecure: true, immutableTags: ["v*"]}]|' "$work/config.yaml" > "$work/store.yaml"
echo "store: {driver: filesystem, rootdirectory: $work/store, maxSize: 64GiB}" >> "$work/store.yaml"
"$work/authz-proxy" serve --config "$work/store.yaml" >"$work/store-decisions.jsonl" 2>"$work/store.log" & pids+=($!); STOREPID=$!
wait_up "$STORE"
SBASE="http://$STORE/v2/lab/bench/app"
metric() { curl -fs "http://$STORE_METRICS/metrics" | awk -v m="$1" '$1 == m {print $2; found=1} END {if (!found) print 0}'; }
settle() { while [ "$(metric authz_proxy_store_fills_in_flight)" != 0 ]; do sleep 0.1; done; }
fetches() { metric 'authz_proxy_upstream_request_duration_seconds_count{op="blob",upstream="lab"}'; }

# Peak RSS growth per phase: the peak is reset (clear_refs) at its start.
resetpeak() { echo 5 > "/proc/$1/clear_refs"; }
echo "store: first pull of the $BLOB_MIB MiB blob (a fill)" >&2
resetpeak "$STOREPID"; before=$(rss "$STOREPID")
FILL_MBS=$(curl -fs -o /dev/null -w '%{speed_download}' "$SBASE/blobs/$BLOB")
settle
GROW_FILL=$(( ($(hwm "$STOREPID") - before) / 1024 ))
resetpeak "$STOREPID"; before=$(rss "$STOREPID")
# Alternated, three times each: the machine's load drifts. The blob was
# checked against its digest when the fill stored it, so every read is
# checked chunk by chunk against the tags recorded then, whole or as one
# range; a restarted proxy's first read hashes the whole (below).
DIRECT_RUNS=(); STORE_RUNS=(); RANGE_RUNS=()
for i in 1 2 3; do
  echo "store: $BLOB_MIB MiB, run $i: registry direct, from the store, from the store as one range" >&2
  DIRECT_RUNS+=("$(curl -fs -o /dev/null -w '%{speed_download}' "${BASE[direct]}/blobs/$BLOB")")
  STORE_RUNS+=("$(curl -fs -o /dev/null -w '%{speed_download}' "$SBASE/blobs/$BLOB")")
  RANGE_RUNS+=("$(curl -fs -o /dev/null -w '%{speed_download}' -H "Range: bytes=0-$(( (BLOB_MIB << 20) - 1 ))" "$SBASE/blobs/$BLOB")")
done
GROW_STORE=$(( ($(hwm "$STOREPID") - before) / 1024 ))
# The proxy restarted: its first read of the blob is hashed against the
# digest (its chunks tagged meanwhile), the next ones checked by chunk.
kill "$STOREPID"; wait "$STOREPID" 2>/dev/null || true
"$work/authz-proxy" serve --config "$work/store.yaml" >>"$work/store-decisions.jsonl" 2>>"$work/store.log" & pids+=($!); STOREPID=$!
wait_up "$STORE"
echo "store: $BLOB_MIB MiB, the first read after a restart" >&2
RESTART_MBS=$(curl -fs -o /dev/null -w '%{speed_download}' "$SBASE/blobs/$BLOB")

echo "store: $CLIENTS concurrent cold pulls of a $COLD_BLOB_MIB MiB blob" >&2
f0=$(fetches); resetpeak "$STOREPID"; before=$(rss "$STOREPID"); t0=$(date +%s.%N)
cold=()
for i in $(seq "$CLIENTS"); do
  curl -s -o /dev/null -w '%{http_code} %{size_download}\n' "$SBASE/blobs/$COLD_BLOB" > "$work/coldpull-$i.out" & cold+=($!)
done
wait "${cold[@]}"
COLD_SECS=$(python3 -c "import time,sys; print(time.time() - float(sys.argv[1]))" "$t0")
settle
COLD_FETCHES=$(python3 -c "import sys; print(int(float(sys.argv[2]) - float(sys.argv[1])))" "$f0" "$(fetches)")
COLD_OK=$(cat "$work"/coldpull-*.out | awk -v size=$((COLD_BLOB_MIB << 20)) '$1 == 200 && $2 == size' | wc -l)
GROW_COLD=$(( ($(hwm "$STOREPID") - before) / 1024 ))
python3 - "$BLOB_MIB" "$FILL_MBS" "${DIRECT_RUNS[*]}" "${STORE_RUNS[*]}" "$GROW_STORE" "$CLIENTS" "$COLD_BLOB_MIB" "$COLD_FETCHES" "$COLD_OK" "$COLD_SECS" "$GROW_COLD" "${RANGE_RUNS[*]}" "$GROW_FILL" "$RESTART_MBS" "$work" <<'PY'
import json, sys, statistics
blob_mib = sys.argv[1]
fill_mbs, direct_runs, store_runs, grow_store = float(sys.argv[2]), list(map(float, sys.argv[3].split())), list(map(float, sys.argv[4].split())), sys.argv[5]
clients, cold_mib, cold_fetches, cold_ok, cold_secs, grow_cold = sys.argv[6], sys.argv[7], int(sys.argv[8]), int(sys.argv[9]), float(sys.argv[10]), sys.argv[11]
range_runs, grow_fill = list(map(float, sys.argv[12].split())), sys.argv[13]
d, st, rg = statistics.median(direct_runs), statistics.median(store_runs), statistics.median(range_runs)
print(f"\ncontent store (filesystem), blob of {blob_mib} MiB, one stream, median of {len(store_runs)} alternated runs:")
print(f"  {'registry, from its own disk':34} {d/1e6:8.0f} MB/s   runs {' '.join(f'{x/1e6:.0f}' for x in direct_runs)}")
print(f"  {'authz-proxy, from its store':34} {st/1e6:8.0f} MB/s   runs {' '.join(f'{x/1e6:.0f}' for x in store_runs)}   {st/d:5.2f}x the registry (target >= 1.0x)   peak RSS growth {grow_store} MiB")
print(f"  {'authz-proxy, from its store, as one range':34} {rg/1e6:8.0f} MB/s   runs {' '.join(f'{x/1e6:.0f}' for x in range_runs)}   {rg/d:5.2f}x the registry   (checked chunk by chunk too)")
restart = float(sys.argv[14])
print(f"  {'authz-proxy, first read after a restart':34} {restart/1e6:8.0f} MB/s   {restart/d:5.2f}x the registry   (hashed whole against the digest, its chunks tagged)")
json.dump({"store": st, "registry": d, "ratio": st / d, "range": rg / d, "restart": restart / d, "fill": fill_mbs, "grow": grow_store}, open(f"{sys.argv[15]}/summary-store.json", "w"))
print(f"  {'authz-proxy, first pull (a fill)':34} {fill_mbs/1e6:8.0f} MB/s   peak RSS growth {grow_fill} MiB")
print(f"\n{clients} concurrent cold pulls of one {cold_mib} MiB blob through the store: {cold_fetches} upstream fetch(es) (target 1), {cold_ok}/{clients} complete, {cold_secs:.1f} s, peak RSS growth {grow_cold} MiB")
PY
fi

if part chain; then
# The decision log's hash chain: two more proxies writing audit.file, one
# with chain: false, one chained and signing an Ed25519 checkpoint every
# second; cached pulls through each, alternating over ROUNDS rounds so that
# a drift of the shared machine falls on both.
openssl genpkey -algorithm ed25519 -out "$work/audit.key" 2>/dev/null
declare -A CHAIN_ADDR CHAIN_PID
for v in off on; do
  CHAIN_ADDR[$v]=127.0.0.1:$(port)
  sed -e "s#^listen: .*#listen: {addr: ${CHAIN_ADDR[$v]}}#" -e "/^metrics:/d" "$work/config.yaml" > "$work/config-chain-$v.yaml"
  if [ "$v" = off ]; then
    echo "audit: {file: $work/decisions-chain-off.jsonl, chain: false}" >> "$work/config-chain-$v.yaml"
  else
    echo "audit: {file: $work/decisions-chain-on.jsonl, checkpoint: {keyFile: $work/audit.key, every: 1s}}" >> "$work/config-chain-$v.yaml"
  fi
  "$work/authz-proxy" serve --config "$work/config-chain-$v.yaml" >/dev/null 2>"$work/authz-chain-$v.log" & pids+=($!); CHAIN_PID[$v]=$!
  wait_up "${CHAIN_ADDR[$v]}"
  curl -fso /dev/null -H "$ACCEPT" "http://${CHAIN_ADDR[$v]}/v2/lab/bench/app/manifests/v1"
  target GET "http://${CHAIN_ADDR[$v]}/v2/lab/bench/app/manifests/$SIGNED" > "$work/chain-digest-$v.targets"
  target GET "http://${CHAIN_ADDR[$v]}/v2/lab/bench/app/manifests/v1" > "$work/chain-tag-$v.targets"
done
for r in $(seq "$ROUNDS"); do
  order="off on"; [ $((r % 2)) = 0 ] && order="on off"
  for s in digest tag; do
    for v in $order; do
      echo "load: chain $v, $s, round $r" >&2
      attack "chain-$s-$v-$r" "$work/chain-$s-$v.targets" "$DURATION" "${CHAIN_PID[$v]}"
    done
  done
done
"$work/authz-proxy" audit verify --log "$work/decisions-chain-on.jsonl" >"$work/chain-verify.txt" 2>&1 || { echo "the chained log does not verify:" >&2; cat "$work/chain-verify.txt" >&2; exit 1; }
python3 - "$work" "$ROUNDS" "$(grep -c . "$work/decisions-chain-on.jsonl")" "$(grep "^OK:" "$work/chain-verify.txt" | cut -c1-70)" <<'PY'
import sys
from report import median, vegeta
work, rounds = sys.argv[1], int(sys.argv[2])
run = lambda s, v, r: vegeta(work, f"chain-{s}-{v}-{r}")
print(f"\ndecision-log hash chain, audit.file on both; chain on also signs an Ed25519 checkpoint every second ({rounds} alternating rounds, medians)\n")
print(f"{'scenario':34} {'chain off':>10} {'chain on':>10} {'on/off':>7} {'p99 off':>8} {'p99 on':>7} {'CPU us/req off':>15} {'on':>6} {'CPU cost':>9}")
for s, title in [("digest", "manifest GET by digest (cached)"), ("tag", "manifest GET by tag (cached)")]:
    off = [run(s, "off", r) for r in range(1, rounds + 1)]
    on = [run(s, "on", r) for r in range(1, rounds + 1)]
    ok = min(x.ok for x in off + on)
    rps_off, rps_on, cpu_off, cpu_on = median(off, "rps"), median(on, "rps"), median(off, "cpu"), median(on, "cpu")
    print(f"{title:34} {rps_off:10.0f} {rps_on:10.0f} {rps_on/rps_off:6.3f}x {median(off, 'p99'):8.2f} {median(on, 'p99'):7.2f} {cpu_off:15.0f} {cpu_on:6.0f} {(cpu_on/cpu_off-1)*100:+8.1f}%  ok {ok:.1%}")
    print(f"{'':34} per round on/off: " + ", ".join(f"{b.rps / a.rps:.3f}" for a, b in zip(off, on)))
print(f"\nthe chained log: {sys.argv[3]} lines; audit verify: {sys.argv[4]}")
PY
fi

if part scale; then
# How the cost grows with the work, each at 1x and 100x or more. Rules:
# two more proxies, one with 10 and one with 10,000 image rules (the
# bench's own last: a linear scan would test every one), cached GETs by
# digest through each, alternated over ROUNDS rounds. Then the Go
# benchmarks that guard the other rows, in process: cached verdicts, a
# store of many blobs, the decision log at a rate.
declare -A RULES_ADDR RULES_PID
for n in 10 10000; do
  RULES_ADDR[$n]=127.0.0.1:$(port)
  python3 - "$work/config.yaml" "${RULES_ADDR[$n]}" "$n" > "$work/config-rules-$n.yaml" <<'PY'
import sys
text, addr, n = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3])
out = []
for line in text.splitlines():
    if line.startswith("listen:"):
        line = "listen: {addr: %s}" % addr
    if line.startswith("metrics:"):
        continue
    if line.startswith("  rules:"):
        out.append(line)
        out += ["    - {name: team-%d, images: [\"lab/team-%d/**\"], action: deny}" % (i, i) for i in range(n - 1)]
        continue
    if "name: open" in line:
        continue
    out.append(line)
print("\n".join(out))
PY
  "$work/authz-proxy" serve --config "$work/config-rules-$n.yaml" >/dev/null 2>"$work/authz-rules-$n.log" & pids+=($!); RULES_PID[$n]=$!
  wait_up "${RULES_ADDR[$n]}"
  curl -fso /dev/null -H "$ACCEPT" "http://${RULES_ADDR[$n]}/v2/lab/bench/app/manifests/$SIGNED"
  target GET "http://${RULES_ADDR[$n]}/v2/lab/bench/app/manifests/$SIGNED" > "$work/rules-$n.targets"
done
for r in $(seq "$ROUNDS"); do
  order="10 10000"; [ $((r % 2)) = 0 ] && order="10000 10"
  for n in $order; do
    echo "load: cached GET by digest, $n rules, round $r" >&2
    attack "rules-$n-$r" "$work/rules-$n.targets" "$DURATION" "${RULES_PID[$n]}"
  done
done
for n in 10 10000; do kill "${RULES_PID[$n]}"; done
echo "scale: Go benchmarks (cached verdicts, rule matching, a store of many blobs, the decision log at a rate)" >&2
{
  go test -run '^$' -bench 'BenchmarkCachedVerdicts$|BenchmarkMatch$' ./internal/policy
  go test -run '^$' -bench 'BenchmarkStoreOfManyObjects$' -benchtime 1x -timeout 60m ./internal/store
  go test -run '^$' -bench 'BenchmarkDecisionLogAtARate$' -benchtime 1x ./internal/audit
} > "$work/scale-bench.txt" 2>&1 || { cat "$work/scale-bench.txt" >&2; exit 1; }
python3 - "$work" "$ROUNDS" <<'PY'
import json, re, sys
from report import median, vegeta
work, rounds = sys.argv[1], int(sys.argv[2])
rules = {n: [vegeta(work, f"rules-{n}-{r}") for r in range(1, rounds + 1)] for n in (10, 10000)}
bench = {}
for line in open(f"{work}/scale-bench.txt"):
    m = re.match(r"^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$", line)
    if not m:
        continue
    vals = dict((unit, float(v)) for v, unit in re.findall(r"([\d.]+) (\S+)", m.group(3)))
    bench[m.group(1)] = vals
def b(name, unit):
    return bench.get(name, {}).get(unit, float("nan"))
out = {"rules": {n: {f: median(rules[n], f) for f in ("rps", "p50", "cpu")} for n in (10, 10000)}, "bench": bench}
json.dump(out, open(f"{work}/summary-scale.json", "w"))
print(f"\nscaling: each row at 1x and at 100x or more the work (one run; rules: {rounds} alternating rounds, medians)\n")
print("| work | at 1x | at 100x or more | cost at 1x | cost at the most |")
print("|---|---|---|---|---|")
r10, r10k = out["rules"][10], out["rules"][10000]
print(f"| policy rules (image globs), cached GET by digest | 10 | 10,000 | {r10['rps']:,.0f} req/s, {r10['cpu']:.0f} µs CPU/req, p50 {r10['p50']:.2f} ms | {r10k['rps']:,.0f} req/s ({r10k['rps']/r10['rps']:.2f}x), {r10k['cpu']:.0f} µs CPU/req, p50 {r10k['p50']:.2f} ms |")
print(f"| policy rules, judging the last rule in process | 10 | 10,000 | {b('BenchmarkMatch/rules=10', 'ns/op')/1000:.1f} µs | {b('BenchmarkMatch/rules=10000', 'ns/op')/1000:.1f} µs |")
v1, v2 = "BenchmarkCachedVerdicts/entries=1000", "BenchmarkCachedVerdicts/entries=1000000"
print(f"| cached verdicts | 1,000 | 1,000,000 | {b(v1, 'B/entry'):,.0f} B per entry, a hit {b(v1, 'ns/op'):.0f} ns | {b(v2, 'B/entry'):,.0f} B per entry ({b(v2, 'B/entry') * 1e6 / 2**20:,.0f} MiB in all), a hit {b(v2, 'ns/op'):.0f} ns |")
s1, s2 = "BenchmarkStoreOfManyObjects/objects=1000", "BenchmarkStoreOfManyObjects/objects=1000000"
print(f"| blobs in a filesystem store | 1,000 | 1,000,000 | opens in {b(s1, 'start-ms'):.1f} ms, first byte {b(s1, 'first-byte-ms'):.1f} ms, a sweep {b(s1, 'sweep-ms')/1000:.2f} s | opens in {b(s2, 'start-ms'):.1f} ms, first byte {b(s2, 'first-byte-ms'):.1f} ms, a sweep {b(s2, 'sweep-ms')/1000:.1f} s (then rests {9 * b(s2, 'sweep-ms')/60000:.1f} min) |")
l1, l2 = "BenchmarkDecisionLogAtARate/decisions=1000/s", "BenchmarkDecisionLogAtARate/decisions=20000/s"
print(f"| decision log (chained, file and stdout, queued) | 1,000/s | 20,000/s | {b(l1, '%cpu'):.1f} % of a core, a request waits {b(l1, 'p99-µs'):.0f} µs at p99 ({b(l1, 'max-µs'):.0f} µs at most) | {b(l2, '%cpu'):.1f} % of a core ({b(l2, 'cpu-µs/line'):.1f} µs a line, a write to stdout per {1 / b(l2, 'writes/line'):.0f} lines), a request waits {b(l2, 'p99-µs'):.0f} µs at p99 ({b(l2, 'max-µs'):.0f} µs at most) |")
PY
fi

if part store; then
# The store's tags: bench/app:v1 is an immutable tag of the store's proxy
# (immutableTags: ["v*"]): once resolved, it is served from its last
# resolution, without an upstream round trip. Against the registry's own
# GET by tag, alternated over ROUNDS rounds.
curl -fso /dev/null -H "$ACCEPT" "$SBASE/manifests/v1"
target GET "$SBASE/manifests/v1" > "$work/immutable.targets"
target GET "${BASE[direct]}/manifests/v1" > "$work/tag-direct.targets"
for r in $(seq "$ROUNDS"); do
  echo "load: manifest GET by tag, round $r: the registry, then an immutable tag through the store" >&2
  attack "immutable-direct-$r" "$work/tag-direct.targets"
  attack "immutable-store-$r" "$work/immutable.targets"
done

# The registry stopped. OUTAGE images (tags cold-*) are pulled through the
# store's proxy with crane and skopeo, by tag and by digest; NEVER other
# ones are not. Then the registry is stopped: every pull of the first must
# still succeed (the tags by their last known digest, within staleIfError),
# every request for the others must get 503.
OUTAGE=${OUTAGE:-10}; NEVER=${NEVER:-5}
pullboth() { # pullboth REF -> "ok" when crane and skopeo both pull REF (bench/app:TAG or bench/app@DIGEST) through the store
  "$tools/crane" pull --insecure "$STORE/lab/$1" "$work/pulled.tar" >/dev/null 2>>"$work/outage.log" \
    && skopeo copy --insecure-policy --src-tls-verify=false "docker://$STORE/lab/$1" "oci:$work/pulled-oci:x" >/dev/null 2>>"$work/outage.log" \
    && echo ok || echo "failed: $1" >>"$work/outage.log"
}
PULLED=(); NEVER_REFS=()
for i in $(seq 0 $((OUTAGE - 1))); do
  d=$("$tools/crane" digest --insecure "$STORE/lab/bench/app:cold-$((COLD - 1 - i))")
  PULLED+=("bench/app:cold-$((COLD - 1 - i))" "bench/app@$d")
done
for i in $(seq 0 $((NEVER - 1))); do
  NEVER_REFS+=("bench/app:cold-$i" "bench/app@$("$tools/crane" digest --insecure "$REG/bench/app:cold-$i")")
done
echo "outage: pulling ${#PULLED[@]} references with crane and skopeo, the registry up" >&2
UP_OK=0; for ref in "${PULLED[@]}"; do [ "$(pullboth "$ref")" = ok ] && UP_OK=$((UP_OK + 1)); done
while [ "$(metric authz_proxy_store_fills_in_flight)" != 0 ] || [ "$(metric authz_proxy_store_writes_in_flight)" != 0 ]; do sleep 0.1; done
echo "outage: the registry stopped" >&2
kill "$REGPID"; wait "$REGPID" 2>/dev/null || true
DOWN_OK=0; for ref in "${PULLED[@]}"; do [ "$(pullboth "$ref")" = ok ] && DOWN_OK=$((DOWN_OK + 1)); done
NEVER_503=0
mpath() { case $1 in *@*) echo "${1%%@*}/manifests/${1#*@}";; *) echo "${1%%:*}/manifests/${1#*:}";; esac; }
for ref in "${NEVER_REFS[@]}"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$ACCEPT" "http://$STORE/v2/lab/$(mpath "$ref")")
  [ "$code" = 503 ] && NEVER_503=$((NEVER_503 + 1))
done
STALE=$(metric 'authz_proxy_stale_tags_total{upstream="lab"}')

python3 - "$work" "$ROUNDS" "${#PULLED[@]}" "$UP_OK" "$DOWN_OK" "${#NEVER_REFS[@]}" "$NEVER_503" "$STALE" <<'PY'
import sys
from report import median, vegeta
work, rounds = sys.argv[1], int(sys.argv[2])
pulled, up_ok, down_ok, never, never_503, stale = map(lambda x: int(float(x)), sys.argv[3:9])
d = [vegeta(work, f"immutable-direct-{r}") for r in range(1, rounds + 1)]
s = [vegeta(work, f"immutable-store-{r}") for r in range(1, rounds + 1)]
row = lambda xs: f"{median(xs, 'rps'):9.0f} {median(xs, 'p50'):8.2f} {median(xs, 'p99'):8.2f} {median(xs, 'cpu'):10.0f} {min(x.ok for x in xs):6.1%}"
print(f"\ncontent store, tags ({rounds} alternating rounds, medians)\n")
print(f"{'scenario':52} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} {'ok':>6}")
print(f"{'manifest GET by tag, the registry itself':52} {row(d)}")
print(f"{'manifest GET by an immutable tag, authz-proxy + store':52} {row(s)}")
print(f"  {median(s, 'rps') / median(d, 'rps'):.2f}x the registry's own req/s (target >= 3x); per round: " + ", ".join(f"{b.rps / a.rps:.2f}" for a, b in zip(d, s)))
print(f"\nupstream stopped (the registry killed): of {pulled} references pulled before (tags and digests, crane and skopeo each), {down_ok} still pull ({up_ok} did with it up); {stale:.0f} tags served stale; never pulled: {never_503}/{never} get 503")
PY
fi

# The targets of issue 28, from what ran, as the README shows them.
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
def load(name):
    p = f"{work}/summary-{name}.json"
    return json.load(open(p)) if os.path.exists(p) else None
m, bl, st = load("manifests"), load("blob"), load("store")
print("\nissue 28's targets, this run\n")
print("| scenario | this run | target | |")
print("|---|---|---|---|")
ok = lambda c: "met" if c else "not met"
if m:
    d, t, h, c = m["digest"], m["tag"], m["head"], m["cold"]
    print(f"| GET by digest, cached verdict | {d['direct']:.2f}x direct, {d['rps']:,.0f} req/s (with wrk: {d['wrk']:.2f}x; net/http alone, answering from memory: {d['vceiling']:.2f}x, {d['ceiling']:.2f}x with wrk; authz-proxy's work above it: {d['above']:.0f} µs CPU/req) | ≥ 6x direct | {ok(d['direct'] >= 6)} |")
    print(f"| GET by tag, cached verdict | {t['minproxy']:.2f}x minproxy, {t['rps']:,.0f} req/s | hold (3.7x) | |")
    print(f"| HEAD by tag, cached verdict | {h['minproxy']:.2f}x minproxy, {h['rps']:,.0f} req/s, {h['rps'] / t['rps']:.2f}x GET by tag; {h['cpu']:.0f} µs CPU/req (minproxy {h['mincpu']:.0f}) | ≥ 1.5x minproxy, within 20 % of GET by tag | {ok(h['minproxy'] >= 1.5 and 0.8 <= h['rps'] / t['rps'] <= 1.2)} |")
    print(f"| cold decision CPU / registry CPU per GET | {c['ratio']:.2f}x ({c['cpu']:.0f} / {c['reg_get']:.0f} µs), {c['rps']:,.0f} decisions/s | ≤ 1.0x | {ok(c['ratio'] <= 1.0)} |")
if bl:
    print(f"| 1 GiB blob, streamed (no store) | {bl['minproxy']:.2f}x minproxy, {bl['mbs'] / 1e6:,.0f} MB/s | hold (1.14x) | |")
if st:
    print(f"| 1 GiB blob, from the store, checked | {st['ratio']:.2f}x the registry ({st['store'] / 1e6:,.0f} against {st['registry'] / 1e6:,.0f} MB/s); as one range {st['range']:.2f}x; first read after a restart {st['restart']:.2f}x | ≥ 1.0x, still checked | {ok(st['ratio'] >= 1.0)} |")
PY
