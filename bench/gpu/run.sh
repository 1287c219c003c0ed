#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md, run on a machine with an NVIDIA GPU and CUDA 13 libraries
# (cuBLAS, cuRAND, NVRTC: the pip wheels PyTorch cu130 ships are enough; no Rust toolchain is
# needed there). Build the binary first on any x86-64 machine with bench/gpu/build.sh.
#
#   bash bench/gpu/run.sh [FORWARD_BINARY] [OUT_DIR]
#
# Defaults: target/cuda/release/examples/forward, bench/results/gpu-<UTC timestamp>.
# Steps:
#   1. the GPU, driver and CUDA libraries found (nvidia-smi, the wheels' lib folders);
#   2. labeld's model forward on the GPU (examples/forward --device cuda) for Lite0 and Lite2,
#      f32 and f16, batches $GPU_BATCHES; each run first compares the GPU's logits with the
#      CPU's f32 ones for a real photo;
#   3. the yardstick: the same network on the same weights in PyTorch eager + cuDNN, channels-last
#      (bench/gpu/torch_bench.py), same precisions and batches, when python3 has torch.
# Environment: GPU_BATCHES [1,8,32,64,128,256], GPU_SECONDS [2], GPU_MODELS [lite0 lite2],
#              GPU_PRECISIONS [f32 f16], GPU_WORKERS [1] (e.g. "1 2": also with two model
#              copies on two threads, as `serve --model-workers 2`), GPU_TORCH [1] (0 skips the
#              yardstick).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BIN=${1:-target/cuda/release/examples/forward}
OUT=${2:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}
BATCHES=${GPU_BATCHES:-1,8,32,64,128,256}
SECONDS_PER=${GPU_SECONDS:-2}
MODELS=${GPU_MODELS:-lite0 lite2}
PRECISIONS=${GPU_PRECISIONS:-f32 f16}
WORKERS=${GPU_WORKERS:-1}
mkdir -p "$OUT"
step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "GPU and libraries"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/machine.txt"
# The CUDA 13 libraries the binary links (libcublas.so.13, libcublasLt.so.13, libcurand.so.10,
# libnvrtc.so.13, libcudart.so.13) from wherever pip put them, plus the driver's libcuda.so.1.
libdirs=$(python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
dirs = set()
for root in roots:
    for lib in glob.glob(os.path.join(root, 'nvidia', '**', 'lib*.so*'), recursive=True):
        dirs.add(os.path.dirname(lib))
print(':'.join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$OUT/machine.txt"
ldd "$BIN" | grep -E "cuda|cublas|curand|nvrtc|not found" | tee -a "$OUT/machine.txt"
chmod +x "$BIN" 2>/dev/null || true

status=0
for workers in $WORKERS; do
  suffix=; [[ $workers == 1 ]] || suffix=-w$workers
  for model in $MODELS; do
    for precision in $PRECISIONS; do
      step "labeld forward on cuda: $model $precision, $workers worker(s)"
      "$BIN" --device cuda --precision "$precision" --model "$model" --batches "$BATCHES" \
        --seconds "$SECONDS_PER" --workers "$workers" \
        --json "$OUT/forward-$model-$precision$suffix.json" || status=1
    done
  done
done

if [[ ${GPU_TORCH:-1} == 1 ]] && python3 -c 'import torch' 2>/dev/null; then
  for model in $MODELS; do
    step "PyTorch on cuda (the yardstick): $model"
    python3 bench/gpu/torch_bench.py --device cuda --model "$model" --channels-last \
      --precisions "$(echo "$PRECISIONS" | tr ' ' ,)" --batches "$BATCHES" --seconds "$SECONDS_PER" \
      --json "$OUT/torch-$model.json" || status=1
  done
else
  echo "the PyTorch yardstick is skipped (GPU_TORCH=0 or no torch in python3)"
fi
step "done: $OUT (status $status)"
exit $status
