# Shell helpers shared by bench/run.sh and bench/stress.sh (sourced; needs $SERVER_PID and $PY).

# Waits for the server's log line with its addresses, then for HTTP /health/ready = 200.
# Sets GRPC_ADDR and HTTP_ADDR.
wait_ready() {
  local log=$1 deadline=$((SECONDS + 120))
  GRPC_ADDR='' HTTP_ADDR=''
  while [[ -z $GRPC_ADDR ]]; do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "labeld serve exited early:" >&2; cat "$log" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "labeld serve: no address line in 120 s" >&2; return 1; }
    GRPC_ADDR=$(sed -n 's/.* addr=\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -1)
    HTTP_ADDR=$(sed -n 's/.* http_addr="\{0,1\}\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -1)
    [[ -n $GRPC_ADDR ]] || sleep 0.1
  done
  until http_get "http://$HTTP_ADDR/health/ready" >/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "labeld serve exited early:" >&2; cat "$log" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "labeld serve: not ready in 120 s" >&2; return 1; }
    sleep 0.1
  done
}

http_get() {
  if command -v curl >/dev/null; then
    curl -sf --max-time 5 "$1"
  else
    $PY -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
  fi
}

status_kb() { # status_kb PID FIELD -> kB
  local k v _
  while read -r k v _; do [[ $k == "$2:" ]] && { echo "$v"; return; }; done < "/proc/$1/status"
  echo 0
}
