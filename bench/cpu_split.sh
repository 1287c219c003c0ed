#!/usr/bin/env bash
# Where the two cores go end to end: runs `labeld serve` under closed-loop load (ImageNet-size
# JPEGs) and splits the CPU time of the timed window by thread group, per answered image, with
# the machine's idle share and the load client's own CPU beside it. It answers "what is the
# other 15 %" for the end-to-end / model-only ratio without perf's own overhead (it reads
# /proc: per-thread utime + stime, and /proc/stat).
#
#   bash bench/cpu_split.sh                         # lite0, 32 callers, 8 s
#   bash bench/cpu_split.sh lite2 16 --max-batch 16 # model, seconds, then extra `labeld serve` flags
#
# Environment: CONCURRENCY [32], LABELD [target/release/labeld] (the binary to measure). Needs bench/setup.sh and bench/make_images.py run before
# (bench/run.sh does both) and the release build of labeld and examples/load.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL=${1:-lite0}
SECS=${2:-8}
shift $(($# < 2 ? $# : 2))
PY=bench/.venv/bin/python
IMAGES=$(ls bench/.images/imagenet/*.jpg | paste -sd,)
LOAD=target/release/examples/load
source bench/lib.sh

log=$(mktemp)
SERVER_PID=
trap '[[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null; rm -f "$log" "$log".*' EXIT
${LABELD:-target/release/labeld} serve --model "$MODEL" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
  --max-queue 256 --max-wait-ms 600000 "$@" > "$log" 2>&1 &
SERVER_PID=$!
wait_ready "$log"
$LOAD --addr "$GRPC_ADDR" --images "$IMAGES" --concurrency "${CONCURRENCY:-32}" --seconds 2 --warmup 1 > /dev/null

# "comm ticks" for each of the server's threads, and the machine's /proc/stat cpu line.
snapshot() {
  head -1 /proc/stat > "$1.stat"
  for t in /proc/"$SERVER_PID"/task/*; do
    echo "$(< "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done > "$1.threads"
}
snapshot "$log.0"
$LOAD --addr "$GRPC_ADDR" --images "$IMAGES" --concurrency "${CONCURRENCY:-32}" --seconds "$SECS" \
  --warmup 0 --json "$log.load.json" > /dev/null
snapshot "$log.1"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=

$PY - "$log" "$(getconf CLK_TCK)" "$MODEL" "$*" <<'EOF'
import collections, json, re, sys
log, hz, model, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def cpu_line(path):
    return [int(v) for v in open(path).read().split()[1:9]]
def groups(path):
    out = collections.Counter()
    for line in open(path):
        comm, ticks = line.rsplit(" ", 1)
        out[re.sub(r"[-0-9]+$", "", comm.strip())] += int(ticks)
    return out
a, b = cpu_line(log + ".0.stat"), cpu_line(log + ".1.stat")
delta = [y - x for x, y in zip(a, b)]
total = sum(delta)
g0, g1 = groups(log + ".0.threads"), groups(log + ".1.threads")
load = json.load(open(log + ".load.json"))
n = load["ok"]
busy = total - delta[3] - delta[4]
server = sum(g1[k] - g0[k] for k in g1)
ms = lambda ticks: 1000.0 * ticks / hz / n
print(f"{model} {flags or '(defaults)'}: {load['images_per_s']:.1f} images/s, mean batch {load['mean_batch']:.2f}, "
      f"{n} answers")
print(f"two cores: {1000.0 * total / hz / n:.3f} ms per answered image in all; "
      f"idle {100.0 * delta[3] / total:.1f} %, system {100.0 * delta[2] / total:.1f} %")
rows = sorted(((g1[k] - g0[k], k) for k in g1), reverse=True)
for ticks, name in rows:
    if ticks > 0:
        print(f"  {name:<16} {ms(ticks):.3f} ms/image  {100.0 * ticks / total:5.1f} %")
print(f"  {'(not the server)':<16} {ms(busy - server):.3f} ms/image  {100.0 * (busy - server) / total:5.1f} %"
      "  (the load client, the kernel's softirqs, anything else)")
EOF
