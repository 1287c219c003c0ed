#!/usr/bin/env bash
# Build labeld and examples/forward with `--features cuda` on a machine with NO GPU and NO CUDA
# toolkit (e.g. the 2-core dev box), for copying to a GPU machine that has the NVIDIA driver and
# PyTorch's CUDA 13 pip wheels (nvidia/cu13/lib inside its site-packages).
#
# What it does (every step is skipped when already done, so re-running is cheap):
#   1. pip-installs the CUDA 13.0 toolchain that torch 2.11+cu130 pins (cuda-toolkit==13.0.2:
#      nvcc 13.0.88, crt, nvvm, cccl, cudart 13.0.96, cublas 13.1.0.3, curand 10.4.0.35,
#      nvrtc 13.0.88) into $CUDA_ROOT/py. The wheels put everything under
#      $CUDA_ROOT/py/nvidia/cu13/{bin,include,lib,nvvm}.
#   2. lays out a CUDA_HOME at $CUDA_ROOT/home: bin/include/nvvm link to the wheel's; lib64/ holds
#      the unversioned lib*.so names the linker wants; lib64/stubs/libcuda.so is a generated stub
#      (SONAME libcuda.so.1) since no wheel ships the driver: it is only linked against, never run;
#      the GPU machine's driver provides the real libcuda.so.1.
#   3. cargo build --release --features cuda (default: --example forward --bin labeld).
#   4. strips the binaries into $CARGO_TARGET_DIR/ship/ and xz -9's them (what gets shipped).
#
# Why CUDA 13.0 exactly: cudarc (dynamic-linking, cuda-version-from-build-system) picks its API
# set from `nvcc --version`, and candle-kernels' PTX gets nvcc's PTX ISA version; a newer nvcc
# (13.1+) would emit PTX that a CUDA 13.0 driver (R580) refuses and bind 13.1+ driver symbols.
#
# Usage:   bench/gpu/build.sh [cargo build args...]
#          bench/gpu/build.sh --env        # print the env exports for building by hand, and exit
# Env:     CUDA_ROOT         toolchain dir        (default $HOME/.cache/labeld-cuda13, ~1.2 GB)
#          CARGO_TARGET_DIR  cargo target dir     (default <repo>/target/cuda)
#          CUDA_COMPUTE_CAP  SM arch for libmoe.a and the PTX target (default 90 = H100/H200)
#          JOBS              cargo -j             (default 2)
#          PYTHON            python with pip      (default python3)
#          SETUP_ONLY=1      install/lay out the toolchain, skip cargo
#          PACK=0            skip making stripped + xz copies in $CARGO_TARGET_DIR/ship
#
# At run time on the GPU machine (the binaries' NEEDED: libcuda.so.1, libcublas.so.13,
# libcurand.so.10, plus libgcc_s/libm/libc (glibc >= 2.34); libcublas.so.13 pulls in
# libcublasLt.so.13 from its own directory; --as-needed drops cudart, nvrtc and libstdc++):
#   export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# (libcuda.so.1 comes from the driver in the system library path; never put lib64/stubs there).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CUDA_ROOT=${CUDA_ROOT:-$HOME/.cache/labeld-cuda13}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/cuda}
CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-python3}
CC=${CC:-cc}

# Pinned to what `torch==2.11.0` (cu130) requires: cuda-toolkit[...]==13.0.2.
TOOLKIT_REQ='cuda-toolkit[nvcc,crt,nvvm,cccl,cudart,cublas,curand,nvrtc]==13.0.2'
NVCC_RELEASE='release 13.0'

PY=$CUDA_ROOT/py                 # pip --target
WHEEL=$PY/nvidia/cu13            # what the wheels install
HOME_DIR=$CUDA_ROOT/home         # the CUDA_HOME we give the build
STUB_DIR=$CUDA_ROOT/stub

export CUDA_HOME=$HOME_DIR
export PATH=$HOME_DIR/bin:$PATH
export CUDA_COMPUTE_CAP CARGO_TARGET_DIR

if [[ ${1:-} == --env ]]; then
    printf 'export CUDA_HOME=%q\nexport PATH=%q/bin:$PATH\nexport CUDA_COMPUTE_CAP=%q\nexport CARGO_TARGET_DIR=%q\n' \
        "$HOME_DIR" "$HOME_DIR" "$CUDA_COMPUTE_CAP" "$CARGO_TARGET_DIR"
    exit 0
fi

log() { printf '[build.sh] %s\n' "$*" >&2; }

# ---- 1. the wheels ---------------------------------------------------------------------------
stamp=$PY/.labeld-installed
if [[ -f $stamp && $(cat "$stamp") == "$TOOLKIT_REQ" && -x $WHEEL/bin/nvcc ]]; then
    log "toolchain already in $PY"
else
    log "installing $TOOLKIT_REQ into $PY"
    rm -rf "$PY"
    mkdir -p "$PY"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --only-binary=:all: --target "$PY" "$TOOLKIT_REQ"
    printf '%s' "$TOOLKIT_REQ" > "$stamp"
fi
if ! "$WHEEL/bin/nvcc" --version | grep -q "$NVCC_RELEASE"; then
    log "error: $WHEEL/bin/nvcc is not CUDA ${NVCC_RELEASE#release }:"
    "$WHEEL/bin/nvcc" --version >&2
    exit 1
fi

# ---- 2. CUDA_HOME layout -------------------------------------------------------------------------
mkdir -p "$HOME_DIR/lib64/stubs" "$STUB_DIR"
for d in bin include nvvm; do ln -sfn "$WHEEL/$d" "$HOME_DIR/$d"; done
# The libraries the crates link with -l<name>: cudarc (cublas, cublasLt, curand, nvrtc, cuda) and
# candle-kernels (cudart). Only the unversioned name is needed for -l; the SONAME (.so.13 / .so.10)
# is what ends up in the binaries' NEEDED.
for lib in cudart.so.13 cublas.so.13 cublasLt.so.13 nvrtc.so.13 curand.so.10; do
    [[ -e $WHEEL/lib/lib$lib ]] || { log "error: missing $WHEEL/lib/lib$lib"; exit 1; }
    ln -sfn "$WHEEL/lib/lib$lib" "$HOME_DIR/lib64/lib${lib%%.so.*}.so"
done

# libcuda stub: one dummy function per driver entry point named in cuda.h (both the unversioned and
# the _v2/_v3/_ptsz... names: __CUDA_API_VERSION_INTERNAL makes cuda.h declare all of them) and in
# cudarc's driver bindings (which add e.g. cuProfilerStart/Stop). Regenerated when they change.
cudarc_sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs 2>/dev/null || true)
stub_c=$STUB_DIR/libcuda_stub.c
stub_so=$STUB_DIR/libcuda.so
names=$(
    {
        printf '#include <cuda.h>\n' |
            "$CC" -E -P -D__CUDA_API_VERSION_INTERNAL -I"$WHEEL/include" -x c - |
            grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t'
        for f in $cudarc_sys; do grep -oE 'load::<_F>\("cu[A-Za-z0-9_]+"\)' "$f" | sed 's/.*("//; s/")//'; done
    } | sort -u
)
new_c=$(printf '/* Link-time stand-in for the NVIDIA driver (libcuda.so.1); never loaded at run time. */\n'
        printf 'int %s(void) { return 999; /* CUDA_ERROR_UNKNOWN */ }\n' $names)
if [[ ! -f $stub_so || ! -f $stub_c || $(cat "$stub_c") != "$new_c" ]]; then
    log "generating libcuda stub ($(wc -w <<<"$names") symbols)"
    printf '%s\n' "$new_c" > "$stub_c"
    "$CC" -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$stub_so" "$stub_c"
fi
ln -sfn "$stub_so" "$HOME_DIR/lib64/stubs/libcuda.so"

# Quick toolchain check: PTX and an sm_XX object, as candle-kernels' build script makes them.
chk=$CUDA_ROOT/check
if [[ ! -f $chk/ok-$CUDA_COMPUTE_CAP ]]; then
    mkdir -p "$chk"
    printf '#include <cuda_fp16.h>\n__global__ void k(float *x, const __half *h) { x[threadIdx.x] += __half2float(h[threadIdx.x]); }\n' > "$chk/t.cu"
    nvcc -gencode "arch=compute_$CUDA_COMPUTE_CAP,code=compute_$CUDA_COMPUTE_CAP" --ptx -std=c++17 -O3 "$chk/t.cu" -o "$chk/t.ptx"
    nvcc -gencode "arch=compute_$CUDA_COMPUTE_CAP,code=sm_$CUDA_COMPUTE_CAP" -c -std=c++17 -Xcompiler -fPIC "$chk/t.cu" -o "$chk/t.o"
    touch "$chk/ok-$CUDA_COMPUTE_CAP"
    log "nvcc check ok ($(grep -m1 '^\.version' "$chk/t.ptx"), sm_$CUDA_COMPUTE_CAP object)"
fi

[[ ${SETUP_ONLY:-0} == 1 ]] && { log "toolchain ready: CUDA_HOME=$CUDA_HOME"; exit 0; }

# ---- 3. cargo ----------------------------------------------------------------------------------
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--example forward --bin labeld)
log "cargo build --release --features cuda ${args[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cd "$REPO"
cargo build --locked --release -j"$JOBS" --features cuda "${args[@]}"

# ---- 4. stripped + xz copies to ship (PACK=0 skips) ------------------------------------------------
# The GPU machine can unpack them without xz-utils: python3 -c 'import lzma,shutil,sys;
# shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' labeld.xz labeld
ship=$CARGO_TARGET_DIR/ship
mkdir -p "$ship"
for b in "$CARGO_TARGET_DIR/release/labeld" "$CARGO_TARGET_DIR/release/examples/forward"; do
    [[ -f $b ]] || continue
    log "$b NEEDED: $(readelf -d "$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
    [[ ${PACK:-1} == 1 ]] || continue
    n=$(basename "$b")
    strip -o "$ship/$n" "$b"
    xz -9 -T1 -f -k "$ship/$n"
    log "$ship/$n: $(stat -c %s "$b") bytes, stripped $(stat -c %s "$ship/$n"), xz -9 $(stat -c %s "$ship/$n.xz")"
done
