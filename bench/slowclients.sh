#!/usr/bin/env bash
# Memory under hostile clients: 300 connections ask for distinct 4 MB
# manifests and never read, while an everyday signed pull goes on; prints
# authz-proxy's resident memory and the everyday pull's slowest latency.
# Not run by CI: its numbers depend on the machine.
#
#   bash bench/slowclients.sh            # CLIENTS=300 SIZE=4000000 HOLD=15s
set -euo pipefail
cd "$(dirname "$0")/.."

COLD=${COLD:-10}
BLOB_MIB=${BLOB_MIB:-1}
source bench/lib.sh

go build -o "$work/slowclients" ./bench/slowclients
if [ -n "${DIRECT:-}" ]; then
  "$work/slowclients" -registry "$REG" -proxy "$AUTHZ" -pid "$REGPID" -direct \
    -clients "${CLIENTS:-300}" -size "${SIZE:-4000000}" -hold "${HOLD:-15s}"
  exit
fi
"$work/slowclients" -registry "$REG" -proxy "$AUTHZ" -pid "$AUTHZPID" \
  -clients "${CLIENTS:-300}" -size "${SIZE:-4000000}" -hold "${HOLD:-15s}"
