#!/usr/bin/env bash
# The one command that reproduces BENCHMARKS.md. Run it on a quiet machine (no build, no other
# load: on 2 cores a concurrent cargo build halves every figure).
#
#   bash bench/run.sh                                  # everything, default durations (~5-6 min on 2 cores)
#   BENCH_SECONDS=1 BENCH_LOAD_SECONDS=2 BENCH_MODELS=lite0 bash bench/run.sh   # a smoke run
#
# Steps: bench/setup.sh (venv), bench/make_images.py (inputs in bench/.images), a release build of
# examples/forward, examples/load and the labeld binary, then for each model:
#   1. model forward with labeld (examples/forward) for each thread count,
#   2. ONNX Runtime on the same weights (bench/ort_bench.py), same batches and thread counts,
#   2b. decoding + preprocessing on one thread, labeld (examples/decode) and libjpeg-turbo
#      (bench/decode_bench.py) on the same ImageNet-size and 12-MP files,
#   3. end to end over gRPC: `labeld serve` on 127.0.0.1 (ephemeral ports), examples/load at each
#      concurrency with the ImageNet-size JPEGs (the model's forward measured again right before
#      the concurrency-1 cell, and before and after the concurrency-32 one: the targets'
#      baselines), then with the 12-MP JPEGs while the server's VmRSS is sampled every 100 ms; /metrics is saved, the server gets SIGTERM and must exit 0.
# and finally bench/report.py prints the tables, the targets with PASS/FAIL and the machine.
# Everything goes to bench/results/<UTC timestamp>/ (JSON per cell, logs, report.md).
#
# Environment (defaults in brackets):
#   BENCH_MODELS [lite0 lite2]      models, space- or comma-separated
#   BENCH_BATCHES [1,4,8,16]        forward batch sizes (labeld and ORT)
#   BENCH_THREADS [1,2]             forward thread counts (labeld and ORT)
#   BENCH_SECONDS [4]               timed seconds per forward cell (labeld and ORT)
#   BENCH_CONCURRENCY [1,8,32]      load concurrencies with the ImageNet-size JPEGs
#   BENCH_CONCURRENCY_12MP [1,8,32] load concurrencies with the 12-MP JPEGs (RSS sampled)
#   BENCH_LOAD_SECONDS [8]          timed window per load cell
#   BENCH_WARMUP [2]                load warm-up per cell, ImageNet-size (not counted)
#   BENCH_WARMUP_12MP [5]           load warm-up per cell, 12-MP (a first round takes seconds)
#   BENCH_CONNECTIONS [1]           HTTP/2 connections the load callers share
#   BENCH_SERVE_FLAGS [--max-queue 256 --max-wait-ms 600000]  extra `labeld serve` flags (batching: labeld's own defaults; no pace-based shedding, so closed-loop load measures throughput)
#   BENCH_STEPS [forward,ort,decode,e2e]  which steps to run
#   BENCH_OUT [bench/results/<timestamp>]  result folder
#   BENCH_NO_BUILD                  set to 1 to use the binaries in target/release as they are
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

list() { echo "${1//,/ }"; }
MODELS=$(list "${BENCH_MODELS:-lite0 lite2}")
BATCHES=${BENCH_BATCHES:-1,4,8,16}
THREADS=$(list "${BENCH_THREADS:-1,2}")
SECONDS_FWD=${BENCH_SECONDS:-4}
CONCURRENCY=$(list "${BENCH_CONCURRENCY:-1,8,32}")
CONCURRENCY_12MP=$(list "${BENCH_CONCURRENCY_12MP:-1,8,32}")
LOAD_SECONDS=${BENCH_LOAD_SECONDS:-8}
WARMUP=${BENCH_WARMUP:-2}
WARMUP_12MP=${BENCH_WARMUP_12MP:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-1}
SERVE_FLAGS=${BENCH_SERVE_FLAGS:---max-queue 256 --max-wait-ms 600000}
STEPS=",${BENCH_STEPS:-forward,ort,decode,e2e},"
OUT=${BENCH_OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
PY=bench/.venv/bin/python
IMAGES=bench/.images

mkdir -p "$OUT"
step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

# Processes this script started, stopped on any exit.
SERVER_PID=
SAMPLER_PID=
cleanup() {
  if [[ -n $SAMPLER_PID ]]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "bench/run.sh: stopping labeld serve (pid $SERVER_PID)" >&2
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "setup"
bash bench/setup.sh
$PY bench/make_images.py --out "$IMAGES"
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
  cargo build --release --example forward --example load --example decode --bin labeld
fi
FORWARD=target/release/examples/forward
LOAD=target/release/examples/load
DECODE=target/release/examples/decode
LABELD=target/release/labeld

# Machine and settings, at the start (report.py adds nothing it cannot read from here).
_BM_UPTIME_START=$(uptime) _BM_SETTINGS="$(printf '%s\n' "models=$MODELS" "batches=$BATCHES" "threads=$THREADS" \
  "forward_seconds=$SECONDS_FWD" "concurrency=$CONCURRENCY" "concurrency_12mp=$CONCURRENCY_12MP" \
  "load_seconds=$LOAD_SECONDS" "warmup=$WARMUP" "warmup_12mp=$WARMUP_12MP" "connections=$CONNECTIONS" \
  "serve_flags=$SERVE_FLAGS")" \
_BM_RUSTC=$(rustc -V 2>/dev/null || echo unknown) _BM_CARGO=$(cargo -V 2>/dev/null || echo unknown) \
_BM_GIT=$(git rev-parse HEAD 2>/dev/null || echo unknown) \
_BM_GIT_DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l) \
_BM_LABELD_VERSION=$($LABELD --version 2>/dev/null || echo unknown) \
$PY - "$OUT/meta.json" <<'EOF'
import json, os, platform, sys, datetime
import onnxruntime, numpy, PIL
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
flags = next((l.split(':', 1)[1].split() for l in open('/proc/cpuinfo') if l.startswith('flags')), [])
mem_kb = next((int(l.split()[1]) for l in open('/proc/meminfo') if l.startswith('MemTotal')), 0)
e = os.environ
json.dump({
    'started_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'cpu_model': cpu, 'nproc': len(os.sched_getaffinity(0)), 'logical_cpus': os.cpu_count(),
    'simd': [f for f in ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'amx_tile') if f in flags],
    'mem_total_mb': mem_kb // 1024, 'kernel': platform.release(), 'uptime_start': e['_BM_UPTIME_START'].strip(),
    'rustc': e['_BM_RUSTC'], 'cargo': e['_BM_CARGO'], 'labeld': e['_BM_LABELD_VERSION'],
    'onnxruntime': onnxruntime.__version__, 'numpy': numpy.__version__, 'pillow': PIL.__version__,
    'python': platform.python_version(), 'git_commit': e['_BM_GIT'],
    'git_dirty_files': int(e['_BM_GIT_DIRTY']), 'settings': dict(l.split('=', 1) for l in e['_BM_SETTINGS'].splitlines()),
    'bench_env': {k: v for k, v in e.items() if k.startswith('BENCH_')},
    'labeld_env': {k: v for k, v in e.items() if k.startswith('LABELD_') and 'SECRET' not in k and 'KEY' not in k},
}, open(sys.argv[1], 'w'), indent=1)
EOF

IMAGENET=$(printf '%s,' "$IMAGES"/imagenet/*.jpg); IMAGENET=${IMAGENET%,}
TWELVE=$(printf '%s,' "$IMAGES"/12mp/*.jpg); TWELVE=${TWELVE%,}

# wait_ready, http_get, status_kb
source bench/lib.sh

# Samples VmRSS of $1 every 100 ms into $2 ("unix_time kB" per line) until killed. It waits with
# a read that times out on a pipe nobody writes to, not `sleep`: forking `sleep` ten times a
# second cost ~1 % of this 2-core machine (85 ms of CPU in 4 s), taken from the server it measures.
sample_rss() {
  local pid=$1 out=$2 k v _ tick
  : > "$out"
  exec {tick}<> <(:)
  while [[ -r /proc/$pid/status ]]; do
    while read -r k v _; do
      if [[ $k == VmRSS: ]]; then echo "$EPOCHREALTIME $v" >> "$out"; break; fi
    done < "/proc/$pid/status" 2>/dev/null || true
    read -rt 0.1 -u "$tick" _ || true
  done
}

load_cell() { # load_cell MODEL SET CONCURRENCY WARMUP IMAGES SAMPLE_RSS
  local c=$3 warm=$4 images=$5 rss=$6 name="e2e-$1-$2-c$3"
  if [[ $rss == 1 ]]; then
    sample_rss "$SERVER_PID" "$OUT/$name.rss.tsv" & SAMPLER_PID=$!
  fi
  $LOAD --addr "$GRPC_ADDR" --images "$images" --concurrency "$c" --seconds "$LOAD_SECONDS" \
    --warmup "$warm" --connections "$CONNECTIONS" --json "$OUT/$name.json"
  if [[ -n $SAMPLER_PID ]]; then
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
  fi
}

# best_forward FIELD FILE: FIELD (images_per_s, batch) of the fastest row of an examples/forward JSON.
best_forward() {
  $PY -c 'import json, sys; print(max(json.load(open(sys.argv[2]))["results"], key=lambda r: r["images_per_s"])[sys.argv[1]])' "$1" "$2"
}

for model in $MODELS; do
  if [[ $STEPS == *,forward,* ]]; then
    for t in $THREADS; do
      step "model forward, labeld: $model, $t thread(s)"
      $FORWARD --model "$model" --batches "$BATCHES" --threads "$t" --seconds "$SECONDS_FWD" \
        --json "$OUT/forward-$model-t$t.json"
    done
  fi
  if [[ $STEPS == *,ort,* ]]; then
    step "model forward, ONNX Runtime: $model"
    maxt=$(tr ' ' '\n' <<<"$THREADS" | sort -n | tail -1)
    labeld_flag=()
    if [[ -f $OUT/forward-$model-t$maxt.json ]]; then
      labeld_flag=(--labeld-ips "$(best_forward images_per_s "$OUT/forward-$model-t$maxt.json")")
    fi
    $PY bench/ort_bench.py --model "$model" --batches "$BATCHES" --threads "$(echo "$THREADS" | tr ' ' ,)" \
      --seconds "$SECONDS_FWD" --json "$OUT/ort-$model.json" "${labeld_flag[@]}"
  fi
  if [[ $STEPS == *,decode,* ]]; then
    size=$([[ $model == lite0 ]] && echo 224 || echo 260)
    for set in imagenet 12mp; do
      files=$([[ $set == imagenet ]] && echo "$IMAGENET" || echo "$TWELVE")
      step "decode + preprocess, one thread: $model, $set (labeld, then libjpeg-turbo)"
      $DECODE --model "$model" --images "$files" --seconds "$SECONDS_FWD" --json "$OUT/decode-$model-$set.json"
      $PY bench/decode_bench.py --size "$size" --images "$files" --seconds "$SECONDS_FWD" \
        --json "$OUT/turbo-$model-$set.json"
    done
  fi
  if [[ $STEPS == *,e2e,* ]]; then
    step "end to end over gRPC: $model (labeld serve $SERVE_FLAGS)"
    log=$OUT/serve-$model.log
    # shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
    env -u LABELD_LOG -u LABELD_LOG_FORMAT $LABELD serve --model "$model" \
      --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 $SERVE_FLAGS > "$log" 2>&1 &
    SERVER_PID=$!
    t0=$SECONDS
    wait_ready "$log"
    echo "labeld serve pid $SERVER_PID: gRPC $GRPC_ADDR, HTTP $HTTP_ADDR, ready in $((SECONDS - t0)) s"
    # The targets' model-only baselines measured again next to the cells they are compared
    # with (the server idle): the forward step ran minutes ago, and this VM's speed drifts by
    # 10-20 % within minutes. Batch 1 before the concurrency-1 cell; the forward step's best
    # batch before and after the concurrency-32 cell. The report shows these and the step's.
    maxt=$(tr ' ' '\n' <<<"$THREADS" | sort -n | tail -1)
    best_batch=$(best_forward batch "$OUT/forward-$model-t$maxt.json" 2>/dev/null || echo 16)
    near_forward() { # near_forward TAG BATCH
      $FORWARD --model "$model" --batches "$2" --threads "$maxt" --seconds "$SECONDS_FWD" \
        --json "$OUT/near-$model-$1-t$maxt.json" > /dev/null
    }
    for c in $CONCURRENCY; do
      if [[ $c == 1 ]]; then near_forward c1 1; fi
      if [[ $c == 32 ]]; then near_forward c32-before "$best_batch"; fi
      load_cell "$model" imagenet "$c" "$WARMUP" "$IMAGENET" 1
      if [[ $c == 32 ]]; then near_forward c32-after "$best_batch"; fi
    done
    for c in $CONCURRENCY_12MP; do
      load_cell "$model" 12mp "$c" "$WARMUP_12MP" "$TWELVE" 1
    done
    hwm=$(status_kb "$SERVER_PID" VmHWM)
    rss_end=$(status_kb "$SERVER_PID" VmRSS)
    http_get "http://$HTTP_ADDR/metrics" > "$OUT/serve-$model.metrics.txt" || true
    kill -TERM "$SERVER_PID"
    ts=$EPOCHREALTIME
    rc=0
    wait "$SERVER_PID" || rc=$?
    stop_ms=$($PY -c "print(round(($EPOCHREALTIME - $ts) * 1000))")
    SERVER_PID=
    echo "labeld serve: exit status $rc after SIGTERM (${stop_ms} ms); VmHWM ${hwm} kB, VmRSS at end ${rss_end} kB"
    printf '{"model": "%s", "serve_flags": "%s", "exit_code": %d, "stop_ms": %d, "vmhwm_kb": %d, "vmrss_end_kb": %d, "grpc_addr": "%s", "http_addr": "%s"}\n' \
      "$model" "$SERVE_FLAGS" "$rc" "$stop_ms" "$hwm" "$rss_end" "$GRPC_ADDR" "$HTTP_ADDR" > "$OUT/serve-$model.json"
  fi
done

uptime > "$OUT/uptime-end.txt"
step "report"
$PY bench/report.py "$OUT"
