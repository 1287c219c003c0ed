#!/usr/bin/env bash
# Overload and soak runs against a real `labeld serve` (release build), with examples/traffic.rs
# offering open-loop traffic over gRPC and the JSON door at once. Run on a quiet machine.
#
#   bash bench/stress.sh overload   # 10x the measured capacity for 30 s (~1.5 min in all)
#   bash bench/stress.sh soak       # 70 % of capacity for 10 min, 20 % bad inputs (~11 min)
#
# Both: start `labeld serve` with its defaults (model: STRESS_MODEL), measure its capacity C with
# examples/load (32 closed-loop gRPC callers, 8 s, ImageNet-size JPEGs), then:
# - overload: offer 10 x C requests/s for 30 s, half over each door, good images only, gRPC
#   deadline 2 s. Then the server must still be ready and label a photo, and exit 0 on SIGTERM.
#   Checked: no answer other than OK or overload refusals (RESOURCE_EXHAUSTED, 503
#   ServiceOverloaded) for good inputs; every 503 carries Retry-After; refusals p99 under 50 ms;
#   no OK answer later than the deadline; peak VmRSS under STRESS_RSS_LIMIT_MB (400).
# - soak: offer 0.7 x C requests/s for 10 min, half over each door, 20 % bad inputs. Checked: no
#   INTERNAL, no 5xx, no client error; bad inputs answered 4xx / INVALID_ARGUMENT; VmRSS growth
#   after warm-up under 10 % (median of the last minute against the median of minute 1 to 2);
#   open descriptors at the end no more than at the start of the window plus 8.
# Results go to bench/results/<mode>-<UTC timestamp>/ (traffic.json, capacity.json, serve.log,
# report.txt); the last lines say PASS or FAIL per check, and the exit status is 0 only when all
# pass.
#
# Environment: STRESS_MODEL [lite2], STRESS_SECONDS (overload 30, soak 600), STRESS_FACTOR
# (overload 10, soak 0.7), STRESS_SERVE_FLAGS (extra `labeld serve` flags), STRESS_RSS_LIMIT_MB
# [400], BENCH_NO_BUILD=1 to use target/release as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODE=${1:-}
case $MODE in
  overload) SECONDS_RUN=${STRESS_SECONDS:-30} FACTOR=${STRESS_FACTOR:-10} BAD=0 ;;
  soak) SECONDS_RUN=${STRESS_SECONDS:-600} FACTOR=${STRESS_FACTOR:-0.7} BAD=0.2 ;;
  *) echo "usage: bash bench/stress.sh overload|soak" >&2; exit 2 ;;
esac
MODEL=${STRESS_MODEL:-lite2}
RSS_LIMIT_MB=${STRESS_RSS_LIMIT_MB:-400}
PY=python3
OUT=bench/results/$MODE-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
# wait_ready, http_get, status_kb
source bench/lib.sh

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
  cargo build --release --bin labeld --example load --example traffic
fi
LABELD=target/release/labeld
IMAGES=$(printf '%s,' bench/.images/imagenet/*.jpg 2>/dev/null); IMAGES=${IMAGES%,}
if [[ ! -f ${IMAGES%%,*} ]]; then
  # Without bench/make_images.py's JPEGs, the photos of the test fixtures (ImageNet-size too).
  IMAGES=tests/fixtures/chelsea.png,tests/fixtures/coffee.png,tests/fixtures/rocket.jpg,tests/fixtures/astronaut.png
fi

SERVER_PID=
cleanup() { [[ -z $SERVER_PID ]] || kill -KILL "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

log=$OUT/serve.log
: > "$log"
# shellcheck disable=SC2086 # a list of flags
env -u LABELD_LOG -u LABELD_LOG_FORMAT $LABELD serve --model "$MODEL" \
  --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 ${STRESS_SERVE_FLAGS:-} > "$log" 2>&1 &
SERVER_PID=$!
wait_ready "$log"
echo "labeld serve ($MODEL, pid $SERVER_PID): gRPC $GRPC_ADDR, HTTP $HTTP_ADDR" | tee "$OUT/report.txt"

target/release/examples/load --addr "$GRPC_ADDR" --images "$IMAGES" --concurrency 32 --seconds 8 \
  --warmup 2 --json "$OUT/capacity.json" | tee -a "$OUT/report.txt"
CAPACITY=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["images_per_s"])' "$OUT/capacity.json")
RATE=$($PY -c "print(round($CAPACITY * $FACTOR, 1))")
echo "capacity $CAPACITY images/s; offering $FACTOR x = $RATE requests/s for $SECONDS_RUN s" | tee -a "$OUT/report.txt"

target/release/examples/traffic --grpc "$GRPC_ADDR" --http "$HTTP_ADDR" --rate "$RATE" \
  --seconds "$SECONDS_RUN" --warmup 2 --http-share 0.5 --bad-share "$BAD" --deadline-ms 2000 \
  --images "$IMAGES" --pid "$SERVER_PID" --json "$OUT/traffic.json" | tee -a "$OUT/report.txt"

# Still serving: ready, and a photo is labelled.
alive=FAIL
if http_get "http://$HTTP_ADDR/health/ready" >/dev/null \
  && curl -sf --max-time 10 --data-binary @tests/fixtures/chelsea.png "http://$HTTP_ADDR/v1/labels" | grep -q '"Labels"'; then
  alive=PASS
fi
hwm=$(status_kb "$SERVER_PID" VmHWM)
kill -TERM "$SERVER_PID"
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=

$PY - "$OUT/traffic.json" "$MODE" "$alive" "$rc" "$hwm" "$RSS_LIMIT_MB" <<'EOF' | tee -a "$OUT/report.txt"
import json, statistics, sys
t = json.load(open(sys.argv[1]))
mode, alive, rc, hwm_kb, limit_mb = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
checks = []
def check(name, ok, detail):
    checks.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
doors = t["doors"]
check("still serving after the run (ready, labels a photo)", alive == "PASS", alive)
check("exit status 0 on SIGTERM", rc == 0, f"exit {rc}")
check("client sent everything it offered", t["not_sent"] == 0, f"{t['not_sent']} not sent")
outcomes = {d: v["outcomes"] for d, v in doors.items()}
client_errors = sum(n["good"] + n["bad"] for v in outcomes.values() for k, n in v.items() if k.startswith("client"))
check("no transport error or unanswered request", client_errors == 0, f"{client_errors}")
srv = t["server"]
if mode == "overload":
    allowed = {"OK", "ResourceExhausted", "HTTP 503 ServiceOverloaded"}
    other = {f"{d} {k}": n for d, v in outcomes.items() for k, n in v.items() if k not in allowed}
    check("good inputs get OK or an overload refusal, nothing else", not other, other or "none")
    refused = {d: v["refused_ms"] for d, v in doors.items()}
    worst = max(r["p99"] for r in refused.values())
    check("overload refusals answered within milliseconds (p99 < 50 ms)", worst < 50,
          ", ".join(f"{d}: {r['count']} refused, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms" for d, r in refused.items()))
    j = doors.get("json", {})
    check("every 503 carries Retry-After", j.get("http_503", 0) == j.get("http_503_with_retry_after", 0),
          f"{j.get('http_503_with_retry_after', 0)} of {j.get('http_503', 0)}")
    late = sum(v["ok_later_than_deadline"] for v in doors.values())
    dl = sum(n["good"] for v in outcomes.values() for k, n in v.items() if k in ("DeadlineExceeded", "HTTP 504 RequestTimeout"))
    check("admitted requests meet their deadline", late == 0 and dl == 0,
          f"{late} OK answers later than {t['deadline_ms']} ms, {dl} deadline errors; OK p99 " +
          ", ".join(f"{d} {v['ok_ms']['p99']:.0f} ms" for d, v in doors.items()))
    ok = sum(v["ok_ms"]["count"] for v in doors.values())
    print(f"      answered OK: {ok} ({ok / t['seconds']:.1f}/s) of {t['sent']} sent ({t['sent'] / t['seconds']:.0f}/s)")
    check(f"peak VmRSS under {limit_mb:.0f} MB", hwm_kb / 1024 < limit_mb,
          f"VmHWM {hwm_kb / 1024:.0f} MB (sampled peak {srv['rss_kb_peak'] / 1024:.0f} MB)")
else:
    bad5 = {f"{d} {k}": n for d, v in outcomes.items() for k, n in v.items()
            if k in ("Internal", "Unknown", "Unavailable", "ResourceExhausted", "DeadlineExceeded") or k.startswith("HTTP 5")}
    check("no INTERNAL, no 5xx, no overload, no deadline error", not bad5, bad5 or "none")
    wrong_bad = {f"{d} {k}": n["bad"] for d, v in outcomes.items() for k, n in v.items()
                 if n["bad"] and not (k == "InvalidArgument" or k.startswith("HTTP 400"))}
    check("bad inputs answered INVALID_ARGUMENT / 400", not wrong_bad, wrong_bad or "all")
    wrong_good = {f"{d} {k}": n["good"] for d, v in outcomes.items() for k, n in v.items() if n["good"] and k != "OK"}
    check("good inputs answered OK", not wrong_good, wrong_good or "all")
    samples = srv["samples"]
    warm = [s[1] for s in samples if 60 <= s[0] < 120]
    last_t = samples[-1][0]
    tail = [s[1] for s in samples if s[0] >= last_t - 60]
    a, b = statistics.median(warm), statistics.median(tail)
    check("VmRSS growth after warm-up under 10 %", b <= a * 1.10,
          f"median {a / 1024:.1f} MB in minute 1-2, {b / 1024:.1f} MB in the last minute ({(b / a - 1) * 100:+.1f} %); peak {srv['rss_kb_peak'] / 1024:.0f} MB")
    fd_start = min(s[2] for s in samples if s[0] >= 2)
    check("no descriptor leak", srv["fds_end"] <= fd_start + 8,
          f"{fd_start} open at the start of the window, max {srv['fds_max']}, {srv['fds_end']} at the end")
    minutes = {}
    for s in samples:
        minutes.setdefault(int(s[0] // 60), []).append(s[1])
    print("      VmRSS median per minute (MB): " + " ".join(f"{statistics.median(v) / 1024:.1f}" for _, v in sorted(minutes.items())))
print(f"{'PASS' if all(checks) else 'FAIL'}  {mode}: {sum(checks)} of {len(checks)} checks passed")
sys.exit(0 if all(checks) else 1)
EOF
