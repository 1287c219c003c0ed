#!/usr/bin/env bash
# The batching settings against each other: `labeld serve` end to end (bench/run.sh's e2e step
# only) once per setting, then one table. This is what README's batching defaults rest on.
#
#   bash bench/batching.sh                 # Lite0, about 7 minutes on 2 cores after the build
#   BENCH_MODELS=lite2 bash bench/batching.sh
#   BENCH_SETTINGS=defaults,decode-pool-2 bash bench/batching.sh   # only these rows
#
# Each setting is `labeld serve`'s defaults plus the flags in its row. Per setting: concurrency 1
# and 32 with the ImageNet-size JPEGs and 32 with the 12-MP JPEGs, BENCH_LOAD_SECONDS each (8).
# Results: bench/results/batching-<UTC timestamp>/<setting>/ (run.sh's files) and report.md.
# The settings alternate in two rounds, so a drift of the shared VM's speed shows as a spread
# within a row rather than as a difference between rows.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SETTINGS=(
  "defaults|"
  "max-batch-4|--max-batch 4"
  "max-batch-8|--max-batch 8"
  "max-delay-2ms|--max-delay-us 2000"
  "decode-pool-2|--decode-workers 2"
  "decode-pool-1|--decode-workers 1"
  "model-workers-2|--model-workers 2"
)
ROUNDS=${BENCH_ROUNDS:-2}
OUT=bench/results/batching-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

if [[ -z ${BENCH_NO_BUILD:-} ]]; then
  cargo build --release --example load --bin labeld
fi
for round in $(seq 1 "$ROUNDS"); do
  for entry in "${SETTINGS[@]}"; do
    name=${entry%%|*} flags=${entry#*|}
    [[ -z ${BENCH_SETTINGS:-} || ,$BENCH_SETTINGS, == *,$name,* ]] || continue
    echo "=== round $round: $name ($flags)"
    BENCH_STEPS=e2e BENCH_NO_BUILD=1 BENCH_MODELS=${BENCH_MODELS:-lite0} \
      BENCH_CONCURRENCY=1,32 BENCH_CONCURRENCY_12MP=32 \
      BENCH_SERVE_FLAGS="--max-queue 256 --max-wait-ms 600000 $flags" \
      BENCH_OUT="$OUT/$name-r$round" bash bench/run.sh > "$OUT/$name-r$round.log" 2>&1
  done
done

bench/.venv/bin/python - "$OUT" "${SETTINGS[@]}" <<'PY' | tee "$OUT/report.md"
import glob, json, os, sys
out, settings = sys.argv[1], sys.argv[2:]
print('| setting | flags | c32 ImageNet-size images/s | c32 p50 ms | c32 mean batch | c1 p50 ms | c32 12 MP images/s | peak RSS MB (12 MP) |')
print('|---|---|---|---|---|---|---|---|')
def cells(name, pattern, pick):
    values = []
    for folder in sorted(glob.glob(os.path.join(out, f'{name}-r*'))):
        for path in glob.glob(os.path.join(folder, pattern)):
            values.append(pick(json.load(open(path)), path))
    return ' / '.join(values) or '-'
def rss(_, path):
    samples = [int(line.split()[1]) for line in open(path[:-5] + '.rss.tsv') if line.strip()]
    return f'{max(samples) * 1024 / 1e6:.0f}' if samples else '-'
def ips(d, _):
    return f"{d['images_per_s']:.1f}"
def p50(d, _):
    return f"{d['latency_ms']['p50']:.1f}"
def batch(d, _):
    return f"{d['mean_batch']:.2f}"
for entry in settings:
    name, flags = entry.split('|', 1)
    if not glob.glob(os.path.join(out, f'{name}-r*')):
        continue  # left out by BENCH_SETTINGS
    row = [name, f"`{flags or '(none)'}`",
           cells(name, 'e2e-*-imagenet-c32.json', ips),
           cells(name, 'e2e-*-imagenet-c32.json', p50),
           cells(name, 'e2e-*-imagenet-c32.json', batch),
           cells(name, 'e2e-*-imagenet-c1.json', p50),
           cells(name, 'e2e-*-12mp-c32.json', ips),
           cells(name, 'e2e-*-12mp-c32.json', rss)]
    print('| ' + ' | '.join(row) + ' |')
PY
