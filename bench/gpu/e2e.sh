#!/usr/bin/env bash
# End to end on a GPU machine: `labeld serve --device cuda` on 127.0.0.1 and examples/load over
# gRPC with the ImageNet-size JPEGs of bench/make_images.py (made there; needs numpy + Pillow),
# at each concurrency; then /metrics is saved and the server must exit 0 on SIGTERM. Build the
# binaries first with bench/gpu/build.sh (labeld with --features cuda; examples/load needs none).
#
#   bash bench/gpu/e2e.sh LABELD_BINARY LOAD_BINARY [OUT_DIR]
#
# Environment: E2E_MODELS [lite0 lite2], E2E_PRECISION [f32], E2E_CONCURRENCY [32 128 256],
#              E2E_SECONDS [5], E2E_WARMUP [2], E2E_SERVE_FLAGS [--max-batch 32 --max-queue 1024
#              --max-wait-ms 600000] (closed-loop load measures throughput, so no pace-based
#              shedding), E2E_CONNECTIONS [4].
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

LABELD=${1:?labeld binary}
LOAD=${2:?examples/load binary}
OUT=${3:-bench/results/gpu-e2e-$(date -u +%Y%m%dT%H%M%SZ)}
MODELS=${E2E_MODELS:-lite0 lite2}
PRECISION=${E2E_PRECISION:-f32}
CONCURRENCY=${E2E_CONCURRENCY:-32 128 256}
SECONDS_PER=${E2E_SECONDS:-5}
WARMUP=${E2E_WARMUP:-2}
SERVE_FLAGS=${E2E_SERVE_FLAGS:---max-batch 32 --max-queue 1024 --max-wait-ms 600000}
CONNECTIONS=${E2E_CONNECTIONS:-4}
PY=${PYTHON:-python3}
IMAGES=${E2E_IMAGES:-/tmp/labeld-images}
mkdir -p "$OUT"
step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
SERVER_PID=
trap '[[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null' EXIT
source bench/lib.sh

step "inputs"
$PY bench/make_images.py --out "$IMAGES" --only imagenet || exit 1
files=$(printf '%s,' "$IMAGES"/imagenet/*.jpg); files=${files%,}
nproc | tee "$OUT/cores.txt"

status=0
for model in $MODELS; do
  step "labeld serve --device cuda --precision $PRECISION: $model ($SERVE_FLAGS)"
  log=$OUT/serve-$model.log
  # shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
  env -u LABELD_LOG -u LABELD_LOG_FORMAT "$LABELD" serve --model "$model" --device cuda \
    --precision "$PRECISION" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    $SERVE_FLAGS > "$log" 2>&1 &
  SERVER_PID=$!
  wait_ready "$log" || { status=1; continue; }
  for c in $CONCURRENCY; do
    "$LOAD" --addr "$GRPC_ADDR" --images "$files" --concurrency "$c" --seconds "$SECONDS_PER" \
      --warmup "$WARMUP" --connections "$CONNECTIONS" --json "$OUT/e2e-$model-c$c.json" || status=1
  done
  http_get "http://$HTTP_ADDR/metrics" > "$OUT/serve-$model.metrics.txt" || true
  kill -TERM "$SERVER_PID"
  rc=0
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=
  echo "labeld serve: exit status $rc after SIGTERM"
  [[ $rc == 0 ]] || status=1
done
step "done: $OUT (status $status)"
exit $status
