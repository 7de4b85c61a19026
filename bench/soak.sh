#!/usr/bin/env bash
# Soak: DURATION (default 10 minutes) at a steady RATE of pulls through
# authz-proxy in front of the distribution registry, mixing allowed pulls by
# tag and by digest, denied pulls and cold verifications of new digests.
# Reports errors (anything but 200 for allowed and 403 for denied: must be
# zero) and the proxy's heap and RSS after a warm-up and at the end (must be
# flat). The caches are sized so that they fill during the warm-up: what
# grows after that is a leak. Not run by CI.
#
#   bash bench/soak.sh
#   DURATION=2m RATE=50 bash bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10m}
RATE=${RATE:-100}
BLOB_MIB=${BLOB_MIB:-1}
COLD_BLOB_MIB=${COLD_BLOB_MIB:-1}
secs=$(python3 -c 'import sys,re; m=re.fullmatch(r"(\d+)([smh])", sys.argv[1]); print(int(m[1])*{"s":1,"m":60,"h":3600}[m[2]])' "$DURATION")
total=$(( secs * RATE ))
COLD=${COLD:-$(( total / 10 + 100 ))}   # one request in ten verifies a new digest
WARMUP=${WARMUP:-120}                   # seconds; the caches below fill in about a minute
MAX_ENTRIES=${MAX_ENTRIES:-2000}
MANIFEST_CACHE_BYTES=${MANIFEST_CACHE_BYTES:-4194304}
source bench/lib.sh
UNSIGNED=unsigned

base="http://$AUTHZ/v2/lab/bench/app"
echo "writing $total targets..." >&2
python3 - "$base" "$SIGNED" "$work/cold.txt" "$total" "$ACCEPT" > "$work/soak.targets" <<'PY'
import sys
base, signed, cold_file, total, accept = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
cold = open(cold_file).read().split()
mix = [("GET", "manifests/v1"), ("HEAD", "manifests/v1"), ("GET", f"manifests/{signed}"), ("GET", "manifests/v1"),
       ("GET", "manifests/unsigned"), ("HEAD", f"manifests/{signed}"), ("GET", "manifests/v1"), ("GET", "manifests/unsigned"),
       ("GET", f"manifests/{signed}"), None]
out = sys.stdout
for i in range(total):
    m = mix[i % 10]
    if m is None:
        m = ("GET", f"manifests/{cold[(i // 10) % len(cold)]}")
    out.write(f"{m[0]} {base}/{m[1]}\n{accept}\n\n")
PY

rss() { awk '/^VmRSS/ {print int($2/1024)}' "/proc/$AUTHZPID/status"; }
heap() { curl -fs "http://$METRICS/metrics" | awk '/^go_memstats_heap_inuse_bytes / {printf "%d", $2/1048576}'; }
curl -fso /dev/null -H "$ACCEPT" "$base/manifests/v1"
echo "soak: $DURATION at $RATE req/s through authz-proxy (heap $(heap) MiB, RSS $(rss) MiB at start)" >&2
( t=0; while sleep 30; do t=$((t + 30)); echo "  ${t}s: heap $(heap) MiB, RSS $(rss) MiB" >&2
    [ "$t" -eq "$WARMUP" ] && echo "$(heap) $(rss)" > "$work/warm"; done ) & sampler=$!
"$tools/vegeta" attack -targets "$work/soak.targets" -rate "$RATE/s" -duration "$DURATION" -max-workers 64 \
  | "$tools/vegeta" report -type json > "$work/soak.json"
kill $sampler 2>/dev/null || true
read -r heap0 rss0 < "$work/warm" || { heap0=?; rss0=?; }
heap1=$(heap); rss1=$(rss)

python3 - "$work/soak.json" "$work/decisions.jsonl" "$heap0" "$rss0" "$heap1" "$rss1" "$WARMUP" <<'PY'
import json, sys, collections
r = json.load(open(sys.argv[1]))
decisions = collections.Counter()
for line in open(sys.argv[2]):
    decisions[json.loads(line)["decision"]] += 1
codes = r["status_codes"]
unexpected = {c: n for c, n in codes.items() if c not in ("200", "403")}
print(f"requests {r['requests']}, rate {r['rate']:.1f}/s, p50 {r['latencies']['50th']/1e6:.2f} ms, p99 {r['latencies']['99th']/1e6:.2f} ms")
print(f"status codes {codes}; decisions logged {dict(decisions)}")
print(f"errors (not 200/403): {sum(unexpected.values())} {unexpected or ''}")
print(f"proxy after the {sys.argv[7]} s warm-up: heap {sys.argv[3]} MiB, RSS {sys.argv[4]} MiB; at the end: heap {sys.argv[5]} MiB, RSS {sys.argv[6]} MiB")
sys.exit(1 if unexpected or r["errors"] else 0)
PY
