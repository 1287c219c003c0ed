#!/usr/bin/env bash
# Drives a real `labeld serve` from outside the Rust code base:
#   1. a Python venv (tests/clients/.venv) with the pinned packages of requirements.txt;
#   2. Python stubs generated from proto/labeld/v1/labels.proto (tests/clients/.gen, not committed);
#   3. moto's S3 server (moto_server) on a free 127.0.0.1 port, with the S3 bucket labeld-photos
#      filled by boto3 (chelsea.png, pics/coffee.png); then target/debug/labeld serve --model lite0,
#      gRPC and HTTP on 127.0.0.1:0 (the ports are read from its log), with three OSS buckets
#      (fixtures=tests/fixtures, scratch=a temp folder, s3photos=s3://labeld-photos on moto, the
#      server given AWS_* for moto) and a random OSS access key;
#   4. grpc_client.py: health, GetModelInfo, DetectImageLabels, errors, the stream (grpcio);
#   5. the same server through server reflection only, with protodial (no .proto given);
#   6. oss_client.py: the OSS door with Alibaba's own SDKs, oss2 and alibabacloud-oss-v2; then
#      s3_faults.py: moto frozen and thawed, its bucket deleted and restored, over gRPC;
#   7. Prometheus: `promtool check metrics` on a scrape, then a Prometheus server scraping labeld
#      (with deploy/prometheus/alerts.yml loaded) must count through PromQL exactly the requests
#      prometheus_check.py sends;
#   8. the web page at / in Debian's headless Chromium (installed here when missing), driven by
#      Playwright (playwright-core from tests/browser/package-lock.json: no browser download):
#      tests/browser/page_test.mjs uploads a photo, waits for its labels and heatmap, switches
#      language, checks an error, and saves a screenshot it checks is not blank
#      (tests/browser/out/page.png);
#   9. SIGTERM: the server must drain and exit 0 within STOP_TIMEOUT seconds.
# The server and moto are killed on any failure. Exit status: 0 when everything passed.
#
# Environment: PYTHON (default python3), LABELD_CLIENTS_BIN (a labeld binary to use instead of
# building target/debug/labeld), LABELD_CLIENTS_READY_TIMEOUT (seconds, default 60),
# LABELD_CLIENTS_STOP_TIMEOUT (seconds, default 30).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

HERE=tests/clients
VENV=$HERE/.venv
GEN=$HERE/.gen
PYTHON=${PYTHON:-python3}
READY_TIMEOUT=${LABELD_CLIENTS_READY_TIMEOUT:-60}
STOP_TIMEOUT=${LABELD_CLIENTS_STOP_TIMEOUT:-30}
# Serving settings, given as flags and checked back through GetModelInfo.
MAX_BATCH=4
MAX_DELAY_US=5000
MAX_QUEUE=32
MODEL_WORKERS=1
# No --decode-workers: images decode on the compute threads (the default), whose count
# GetModelInfo then reports as its decode_workers.
THREADS=2

now() { echo "${EPOCHREALTIME/,/.}"; }   # seconds, with microseconds, whatever the locale
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0=$(now)
step() { echo "-- [$(since "$T0") s] $*"; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/labeld-clients.XXXXXX")
LOG=$TMP/server.log
MOTO_LOG=$TMP/moto.log
SERVER_PID=
MOTO_PID=
PROM_PID=
WATCHDOG_PID=
ok=0

cleanup() {
  local rc=$?
  if [[ -n $WATCHDOG_PID ]]; then kill "$WATCHDOG_PID" 2>/dev/null || true; fi
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "run.sh: killing labeld serve (pid $SERVER_PID)" >&2
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n $PROM_PID ]] && kill -0 "$PROM_PID" 2>/dev/null; then
    kill -KILL "$PROM_PID" 2>/dev/null || true
    wait "$PROM_PID" 2>/dev/null || true
  fi
  if [[ -n $MOTO_PID ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
    kill -TERM "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
  if [[ $ok != 1 && -s $MOTO_LOG ]]; then
    echo "---- moto_server log (last 15 lines) ----" >&2
    tail -n 15 "$MOTO_LOG" >&2
    echo "-----------------------------------------" >&2
  fi
  if [[ $ok != 1 && -s $LOG ]]; then
    echo "---- labeld serve log (last 40 lines) ----" >&2
    tail -n 40 "$LOG" >&2
    echo "------------------------------------------" >&2
  fi
  rm -rf "$TMP"
  if [[ $ok != 1 ]]; then
    echo "run.sh: FAILED (exit ${rc})" >&2
    [[ $rc == 0 ]] && rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "run.sh: $*" >&2; exit 1; }

# ---- 1. venv ---------------------------------------------------------------------------------
step "Python venv $VENV"
# Rebuilt when requirements.txt or the interpreter changes (the stamp records both).
want_stamp="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
if [[ ! -x $VENV/bin/python || "$(cat "$VENV/.stamp" 2>/dev/null)" != "$want_stamp" ]]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || fail "cannot create a venv with $PYTHON (on Debian: apt-get install python3-venv)"
  # oss2 and crcmod exist on PyPI only as source distributions: pip builds those two.
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --no-input --quiet \
    --only-binary=:all: --no-binary=oss2,crcmod -r "$HERE/requirements.txt"
  echo "$want_stamp" > "$VENV/.stamp"
fi
"$VENV/bin/python" -c 'import grpc, grpc_tools, grpc_health, grpc_reflection, google.protobuf as pb; print("   grpcio", grpc.__version__, "protobuf", pb.__version__)'
"$VENV/bin/python" -c 'import oss2, alibabacloud_oss_v2 as v2; print("   oss2", oss2.__version__, "alibabacloud-oss-v2", v2.__version__)'
"$VENV/bin/python" -c 'import moto, boto3; print("   moto", moto.__version__, "boto3", boto3.__version__)'
PROTODIAL=$VENV/bin/protodial
export PYTHONUTF8=1              # the checks print and compare Chinese label names, whatever the locale
export XDG_DATA_HOME=$TMP/xdg   # protodial creates its reusable-proto folder there, not in $HOME

# ---- 2. stubs --------------------------------------------------------------------------------
step "stubs: grpc_tools.protoc proto/labeld/v1/labels.proto -> $GEN"
rm -rf "$GEN"
mkdir -p "$GEN"
"$VENV/bin/python" -m grpc_tools.protoc -Iproto --python_out="$GEN" --pyi_out="$GEN" \
  --grpc_python_out="$GEN" proto/labeld/v1/labels.proto
ls "$GEN/labeld/v1" | sed 's/^/   /'

# ---- 3. server -------------------------------------------------------------------------------
if [[ -n ${LABELD_CLIENTS_BIN:-} ]]; then
  BIN=$LABELD_CLIENTS_BIN
else
  step "cargo build (debug)"
  cargo build --quiet
  BIN=target/debug/labeld
fi
[[ -x $BIN ]] || fail "no labeld binary at $BIN"

# The OSS door: a random access key for this run (the server reads it from LABELD_ACCESS_KEY_*,
# the SDKs from OSS_ACCESS_KEY_*), and a second bucket whose folder the OSS checks write into.
OSS_AK=LTAI$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
OSS_SK=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
OSS_REGION=cn-hangzhou
mkdir -p "$TMP/scratch"

# The S3-backed bucket: moto's S3 server on a free loopback port (asked of the kernel, then
# released: another process could take it in between, so up to 3 tries), polled until it answers
# (bounded), then filled with boto3. Its key is arbitrary (moto accepts any); labeld gets it, the
# endpoint and the region through AWS_* in its own environment only (object_store's from_env).
S3_BUCKET=labeld-photos
S3_AK=labeld-clients-test
S3_SK=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
S3_REGION=us-east-1
S3_ENDPOINT=
step "moto_server (S3) on 127.0.0.1, bucket $S3_BUCKET filled with boto3"
moto_start=$(now)
for try in 1 2 3; do
  S3_PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" </dev/null >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!
  # Polls GET / (S3 ListBuckets) every 0.1 s for READY_TIMEOUT s while moto_server is alive.
  if "$VENV/bin/python" - "$S3_PORT" "$MOTO_PID" "$READY_TIMEOUT" <<'PY'
import os, sys, time, urllib.request
port, pid, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
            if resp.status == 200:
                sys.exit(0)
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(2)
    time.sleep(0.1)
sys.exit(1)
PY
  then
    S3_ENDPOINT=http://127.0.0.1:$S3_PORT
    break
  fi
  kill -TERM "$MOTO_PID" 2>/dev/null || true
  wait "$MOTO_PID" 2>/dev/null || true
  MOTO_PID=
  echo "   moto_server did not answer on port $S3_PORT (try $try):" >&2
  tail -n 5 "$MOTO_LOG" | sed 's/^/     /' >&2
done
[[ -n $S3_ENDPOINT ]] || fail "moto_server did not start (3 tries)"
echo "   moto_server answering on $S3_ENDPOINT after $(since "$moto_start") s (pid $MOTO_PID)"
upload_start=$(now)
"$VENV/bin/python" - "$S3_ENDPOINT" "$S3_AK" "$S3_SK" "$S3_REGION" "$S3_BUCKET" <<'PY' || fail "filling the moto bucket with boto3 failed"
import os, sys
# Only the arguments configure boto3: no AWS_* of the caller's, no ~/.aws profile.
for var in [v for v in os.environ if v.startswith("AWS_")]:
    del os.environ[var]
os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
import boto3
endpoint, ak, sk, region, bucket = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
                  region_name=region)
s3.create_bucket(Bucket=bucket)
for path, key in (("tests/fixtures/chelsea.png", "chelsea.png"), ("tests/fixtures/coffee.png", "pics/coffee.png")):
    s3.upload_file(path, bucket, key)
listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
assert sorted(listed) == ["chelsea.png", "pics/coffee.png"], listed
print("    ", ", ".join(f"s3://{bucket}/{k} ({n} bytes)" for k, n in sorted(listed.items())))
PY
echo "   bucket created and filled in $(since "$upload_start") s; moto setup $(since "$moto_start") s in all"

step "starting $BIN serve --model lite0 --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0"
(
  # Only the flags below configure it: drop LABELD_* settings from the caller's environment,
  # then give it this run's access key (environment only: a flag would show in `ps`).
  # Likewise AWS_*: the S3 bucket's connection is moto's, given here only.
  while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(LABELD|AWS)_' || true)
  export LABELD_ACCESS_KEY_ID=$OSS_AK LABELD_ACCESS_KEY_SECRET=$OSS_SK
  export AWS_ENDPOINT=$S3_ENDPOINT AWS_ALLOW_HTTP=true AWS_REGION=$S3_REGION \
    AWS_ACCESS_KEY_ID=$S3_AK AWS_SECRET_ACCESS_KEY=$S3_SK
  exec "$BIN" serve --model lite0 --device cpu --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --region "$OSS_REGION" --bucket fixtures=tests/fixtures --bucket "scratch=$TMP/scratch" \
    --bucket "s3photos=s3://$S3_BUCKET" \
    --max-batch "$MAX_BATCH" --max-delay-us "$MAX_DELAY_US" --max-queue "$MAX_QUEUE" \
    --model-workers "$MODEL_WORKERS" --threads "$THREADS" --drain-timeout-secs 10
) </dev/null >"$TMP/server.out" 2>"$LOG" &
SERVER_PID=$!

# The ports: the `addr=` (gRPC) and `http_addr=` (HTTP) fields of its "listening" log line, written
# once the sockets are bound (before the model is warm). Polled a bounded number of times; the
# process must stay alive. (tracing may quote the string field: http_addr="127.0.0.1:PORT".)
ADDR=
HTTP_ADDR=
for _ in $(seq 1 $((READY_TIMEOUT * 10))); do
  line=$(grep -m1 ' addr=[0-9.]*:[0-9]' "$LOG" || true)
  if [[ -n $line ]]; then
    ADDR=$(grep -o ' addr=[0-9.]*:[0-9]*' <<<"$line" | head -n1 | sed 's/^ addr=//')
    HTTP_ADDR=$(grep -o 'http_addr="\{0,1\}[0-9.]*:[0-9]*' <<<"$line" | head -n1 | sed 's/^http_addr="\{0,1\}//')
    break
  fi
  kill -0 "$SERVER_PID" 2>/dev/null || fail "labeld serve exited before listening"
  sleep 0.1
done
[[ -n $ADDR ]] || fail "labeld serve did not log its address within ${READY_TIMEOUT} s"
[[ -n $HTTP_ADDR ]] || fail "labeld serve logged no http_addr= next to addr=: $line"
echo "   listening on $ADDR (gRPC) and $HTTP_ADDR (HTTP) (pid $SERVER_PID)"

# ---- 4. grpcio client ------------------------------------------------------------------------
# It polls grpc.health.v1 Check until SERVING (bounded: READY_TIMEOUT / 0.2 s tries).
step "grpc_client.py (grpcio, generated stubs, health checking)"
"$VENV/bin/python" "$HERE/grpc_client.py" --addr "$ADDR" --gen-dir "$GEN" \
  --ready-tries $((READY_TIMEOUT * 5)) --ready-interval 0.2 \
  --expect-model efficientnet-lite0 --expect-device cpu \
  --expect-max-batch "$MAX_BATCH" --expect-max-delay-us "$MAX_DELAY_US" --expect-max-queue "$MAX_QUEUE" \
  --expect-model-workers "$MODEL_WORKERS" --expect-decode-workers "$THREADS"

# ---- 5. reflection only ----------------------------------------------------------------------
step "server reflection with protodial (no .proto given)"
json_check() { "$VENV/bin/python" -c "import json, sys; d = json.load(sys.stdin); $1"; }

echo "   \$ protodial list grpc://$ADDR"
services=$("$PROTODIAL" list "grpc://$ADDR")
echo "$services" | sed 's/^/     /'
grep -qx 'labeld.v1.ImageLabels' <<<"$services" || fail "reflection does not list labeld.v1.ImageLabels"
grep -qx 'grpc.health.v1.Health' <<<"$services" || fail "reflection does not list grpc.health.v1.Health"

echo "   \$ protodial list grpc://$ADDR labeld.v1.ImageLabels"
methods=$("$PROTODIAL" list "grpc://$ADDR" labeld.v1.ImageLabels)
echo "$methods" | sed 's/^/     /'
for m in DetectImageLabels DetectImageLabelsStream GetModelInfo; do
  grep -qx "labeld.v1.ImageLabels/$m" <<<"$methods" || fail "reflection does not list $m"
done

echo "   \$ protodial grpc://$ADDR/labeld.v1.ImageLabels/GetModelInfo"
info=$("$PROTODIAL" "grpc://$ADDR/labeld.v1.ImageLabels/GetModelInfo")
echo "     $info"
json_check 'assert d["model"] == "efficientnet-lite0" and d["classCount"] == 1000, d' <<<"$info" \
  || fail "GetModelInfo through reflection: unexpected answer"

echo "   \$ protodial -d @chelsea.json grpc://$ADDR/labeld.v1.ImageLabels/DetectImageLabels"
printf '{"image":"%s","threshold":0.5,"language":"en","requestId":"reflect-chelsea"}' \
  "$(base64 -w0 tests/fixtures/chelsea.png)" >"$TMP/chelsea.json"
answer=$("$PROTODIAL" -d @"$TMP/chelsea.json" "grpc://$ADDR/labeld.v1.ImageLabels/DetectImageLabels")
json_check '
names = [(l["labelName"], l["labelLevel"], l.get("parentLabelName", "")) for l in d["labels"]]
assert ("Animal", 1, "") in names and ("Cat", 2, "Animal") in names, names
assert d["requestId"] == "reflect-chelsea", d["requestId"]
print("    ", " > ".join("%s %.3f" % (l["labelName"], l["labelConfidence"]) for l in d["labels"]), "| requestId", d["requestId"])
' <<<"$answer" || fail "DetectImageLabels through reflection: unexpected answer: $answer"

echo "   \$ protodial -d '{\"service\":\"labeld.v1.ImageLabels\"}' grpc://$ADDR/grpc.health.v1.Health/Check"
health=$("$PROTODIAL" -d '{"service":"labeld.v1.ImageLabels"}' "grpc://$ADDR/grpc.health.v1.Health/Check")
echo "     $health"
json_check 'assert d["status"] == "SERVING", d' <<<"$health" || fail "health through reflection: $health"

# The raw input format puts a file's bytes in one bytes field: no base64, no JSON.
echo "   \$ protodial --input-format raw --input-field image --field threshold=0.5 --field language=zh-Hans -d @tests/fixtures/chelsea.png grpc://$ADDR/labeld.v1.ImageLabels/DetectImageLabels"
answer=$("$PROTODIAL" --input-format raw --input-field image --field threshold=0.5 --field language=zh-Hans \
  -d @tests/fixtures/chelsea.png "grpc://$ADDR/labeld.v1.ImageLabels/DetectImageLabels")
json_check '
names = [(l["labelName"], l["labelLevel"], l.get("parentLabelName", "")) for l in d["labels"]]
assert ("动物", 1, "") in names and ("猫", 2, "动物") in names, names
print("    ", " > ".join("%s %.3f" % (l["labelName"], l["labelConfidence"]) for l in d["labels"]), "| requestId", d["requestId"])
' <<<"$answer" || fail "DetectImageLabels (raw input) through reflection: unexpected answer: $answer"

# A client stream from NDJSON on stdin; one compact JSON answer per line comes back.
echo "   \$ (one JSON request per image) | protodial -d @- grpc://$ADDR/labeld.v1.ImageLabels/DetectImageLabelsStream"
answers=$(for f in chelsea.png coffee.png; do
  printf '{"image":"%s","threshold":0.5,"requestId":"%s"}\n' "$(base64 -w0 "tests/fixtures/$f")" "$f"
done | "$PROTODIAL" -d @- "grpc://$ADDR/labeld.v1.ImageLabels/DetectImageLabelsStream")
"$VENV/bin/python" -c '
import json, sys
got = {d["requestId"]: d for d in map(json.loads, sys.stdin.read().splitlines())}
assert sorted(got) == ["chelsea.png", "coffee.png"], sorted(got)
for rid, d in got.items():
    print("    ", rid, "->", " > ".join("%s %.3f" % (l["labelName"], l["labelConfidence"]) for l in d["labels"]))
assert "Cat" in [l["labelName"] for l in got["chelsea.png"]["labels"]]
assert "Espresso" in [l["labelName"] for l in got["coffee.png"]["labels"]]
' <<<"$answers" || fail "DetectImageLabelsStream through reflection: unexpected answers: $answers"

# ---- 6. OSS SDK clients ----------------------------------------------------------------------
# The SDKs read the key from OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET (EnvironmentVariableCredentialsProvider).
step "oss_client.py (oss2 ${OSS_REGION} V4 + V1, alibabacloud-oss-v2, presigned URLs, S3 bucket s3photos) on http://$HTTP_ADDR"
OSS_ACCESS_KEY_ID=$OSS_AK OSS_ACCESS_KEY_SECRET=$OSS_SK "$VENV/bin/python" "$HERE/oss_client.py" \
  --endpoint "http://$HTTP_ADDR" --bucket fixtures --fixtures-dir tests/fixtures --region "$OSS_REGION" \
  --scratch-bucket scratch --scratch-dir "$TMP/scratch" --s3-bucket s3photos \
  --ready-tries $((READY_TIMEOUT * 5)) --ready-interval 0.2 \
  || fail "oss_client.py failed"
# The s3photos answers must have come from moto: labeld's GETs are in moto's access log.
for key in chelsea.png pics/coffee.png; do
  grep -q "\"GET /$S3_BUCKET/$key HTTP" "$MOTO_LOG" \
    || fail "moto_server's log shows no GET /$S3_BUCKET/$key: labeld did not read s3photos from S3"
done
echo "   moto_server answered 200 to $(grep -c "\"GET /$S3_BUCKET/" "$MOTO_LOG") GET(s) of $S3_BUCKET objects from labeld"

step "s3_faults.py: moto frozen (SIGSTOP) and thawed, its bucket deleted and restored"
"$VENV/bin/python" "$HERE/s3_faults.py" --addr "$ADDR" --gen-dir "$GEN" --moto-pid "$MOTO_PID" \
  --endpoint "$S3_ENDPOINT" --access-key "$S3_AK" --secret-key "$S3_SK" --region "$S3_REGION" \
  --bucket "$S3_BUCKET" || fail "s3_faults.py failed"

# ---- 7. Prometheus ---------------------------------------------------------------------------
# After all that real traffic: promtool lints a scrape; then a real Prometheus server (Debian's
# `prometheus`, installed here when missing) scrapes labeld every second with the alert rules of
# deploy/prometheus loaded, and PromQL must count exactly the requests prometheus_check.py sends.
step "Prometheus: promtool check metrics, a Prometheus server scraping labeld, PromQL counts"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "   installing Debian's prometheus package (promtool and the server)"
  SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null 2>"$TMP/apt.log" \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null; } \
    || fail "cannot install prometheus: $(tail -n 3 "$TMP/apt.log")"
fi
echo "   $(promtool --version 2>&1 | head -n1)"
"$VENV/bin/python" -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=10).read())' \
  "http://$HTTP_ADDR/metrics" >"$TMP/scrape.txt"
promtool check metrics <"$TMP/scrape.txt" || fail "promtool check metrics found problems in labeld's /metrics"
echo "   promtool check metrics: clean ($(grep -c '^labeld_' "$TMP/scrape.txt") labeld_ samples after the client tests)"
RULES=$PWD/deploy/prometheus/alerts.yml
RULE_COUNT=0
PROM_RULES=
if [[ -f $RULES ]]; then
  RULE_COUNT=$(grep -cE '^\s*- alert:' "$RULES")
  PROM_RULES="rule_files: ['$RULES']"
fi
PROM_PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
cat >"$TMP/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
$PROM_RULES
scrape_configs:
  - job_name: labeld
    static_configs:
      - targets: ['$HTTP_ADDR']
YAML
promtool check config "$TMP/prometheus.yml" >/dev/null || fail "promtool check config failed on the test's prometheus.yml"
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" </dev/null >"$TMP/prometheus.log" 2>&1 &
PROM_PID=$!
"$VENV/bin/python" "$HERE/prometheus_check.py" --prometheus "http://127.0.0.1:$PROM_PORT" \
  --labeld "http://$HTTP_ADDR" --fixtures-dir tests/fixtures --timeout "$READY_TIMEOUT" \
  --expect-rules "$RULE_COUNT" \
  || { tail -n 20 "$TMP/prometheus.log" >&2; fail "prometheus_check.py failed"; }
kill -TERM "$PROM_PID" 2>/dev/null || true
wait "$PROM_PID" 2>/dev/null || true
PROM_PID=

# ---- 8. The web page in a real browser ----------------------------------------------------------
step "web page: Playwright drives Debian's headless Chromium against http://$HTTP_ADDR/"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $CHROMIUM ]]; then
  echo "   installing Debian's chromium package"
  SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get install -y --no-install-recommends chromium >/dev/null 2>"$TMP/apt.log" \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends chromium >/dev/null; } \
    || fail "cannot install chromium: $(tail -n 3 "$TMP/apt.log")"
fi
echo "   $("$CHROMIUM" --version 2>/dev/null | head -n1)"
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  (cd tests/browser && npm ci --no-audit --no-fund >/dev/null) || fail "npm ci in tests/browser failed"
fi
echo "   playwright-core $(node -p 'require("./tests/browser/node_modules/playwright-core/package.json").version')"
mkdir -p tests/browser/out
CHROMIUM=$CHROMIUM node tests/browser/page_test.mjs "http://$HTTP_ADDR/" tests/fixtures/chelsea.png \
  tests/browser/out/page.png || fail "the web page test failed"

# ---- 9. SIGTERM ------------------------------------------------------------------------------
step "SIGTERM: labeld must drain and exit 0 within ${STOP_TIMEOUT} s"
# A watchdog SIGKILLs the server if it overstays; `wait` then reports 137, a failure.
watchdog() {
  local s
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$STOP_TIMEOUT" & s=$!
  wait "$s"
  echo "run.sh: labeld serve still running ${STOP_TIMEOUT} s after SIGTERM; killing it" >&2
  kill -KILL "$SERVER_PID" 2>/dev/null || true
}
watchdog & WATCHDOG_PID=$!
stop_start=$(now)
kill -TERM "$SERVER_PID"
server_rc=0
wait "$SERVER_PID" || server_rc=$?
SERVER_PID=
kill "$WATCHDOG_PID" 2>/dev/null || true
wait "$WATCHDOG_PID" 2>/dev/null || true
WATCHDOG_PID=
[[ $server_rc == 0 ]] || fail "labeld serve exited with status $server_rc after SIGTERM (wanted 0)"
grep -q 'stopped' "$LOG" || fail "labeld serve exited 0 but did not log 'stopped'"
echo "   exited 0 in $(since "$stop_start") s after SIGTERM"

ok=1
step "gRPC and OSS clients: all passed"
