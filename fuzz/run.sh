#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, starting from the committed seeds
# (fuzz/seeds/<target>/), and exits non-zero if any target crashes (panic, failed property,
# sanitizer report, allocation over the limit, timeout). Works on the stable toolchain:
# cargo-fuzz's nightly-only rustc flags are allowed with RUSTC_BOOTSTRAP=1.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# Environment: FUZZ_SANITIZER (default address; "none" builds without AddressSanitizer).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image_decode oss_process authorization)
sanitizer=${FUZZ_SANITIZER:-address}

# cargo-fuzz, pinned, installed next to this script (fuzz/.tools is git-ignored).
CARGO_FUZZ_VERSION=0.13.2
export PATH="$PWD/.tools/bin:$PATH"
if [ "$(cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "-- installing cargo-fuzz $CARGO_FUZZ_VERSION into fuzz/.tools"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$PWD/.tools"
fi
export RUSTC_BOOTSTRAP=1

# Per-target libFuzzer options. Every target: LeakSanitizer off (a process-wide cache is not a
# leak), one input may not take over 30 s, the process may not pass 2 GiB, and no single
# allocation may pass 512 MiB (the image target's limits allow about 100 MiB; see
# fuzz_targets/image_decode.rs).
common=(-timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 -detect_leaks=0)
declare -A extra=(
  [image_decode]="-max_len=65536"
  [oss_process]="-max_len=256"
  [authorization]="-max_len=4096"
)

start=$(date +%s)
echo "-- building ${targets[*]} (sanitizer: $sanitizer)"
if [ $# -eq 0 ]; then
  cargo fuzz build --sanitizer "$sanitizer"    # all of them, in one cargo build
else
  for t in "${targets[@]}"; do cargo fuzz build --sanitizer "$sanitizer" "$t"; done
fi
echo "-- built in $(($(date +%s) - start)) s"
# The binaries are run directly (`cargo fuzz run` would rebuild first, e.g. after an edit in src/,
# so every target runs the code that was built above).
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
# What `cargo fuzz run` sets for AddressSanitizer builds.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

mkdir -p logs
failed=()
for t in "${targets[@]}"; do
  corpus=corpus/$t
  mkdir -p "$corpus" "artifacts/$t"
  # libFuzzer writes new inputs to its first corpus folder: a copy, never seeds/.
  cp -p seeds/"$t"/* "$corpus"/
  log=logs/$t.log
  echo "-- $t: ${seconds} s from $(ls seeds/"$t" | wc -l) seeds"
  # shellcheck disable=SC2086
  if "$bin/$t" "$corpus" -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" \
      "${common[@]}" ${extra[$t]:-} >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
    grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))' "$log" || true
  else
    failed+=("$t")
    echo "!! $t FAILED (full log: fuzz/$log); the report:"
    # The panic or sanitizer message, then libFuzzer's summary and the input (as bytes and base64).
    grep -E -m1 -A12 "panicked at|==[0-9]+==ERROR|ERROR: libFuzzer" "$log" | head -n 30 || true
    sed -n '/^SUMMARY/,/^Base64/p' "$log"
    ls artifacts/"$t"/ | sed "s|^|   artifact: fuzz/artifacts/$t/|"
  fi
done

echo "-- total $(($(date +%s) - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}; reproduce with (in fuzz/):"
  echo "   RUSTC_BOOTSTRAP=1 .tools/bin/cargo-fuzz run --sanitizer $sanitizer <target> artifacts/<target>/<file>"
  exit 1
fi
echo "fuzz: no crashes"
