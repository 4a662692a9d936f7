#!/usr/bin/env bash
# Everything that needs a Hopper GPU, in sections that each fit in a few minutes.
#
#   bash scripts/gpu_suite.sh [SECTION ...]    # default: all sections, in this order
#
#   tests    the GPU-marked tests (kernels compiled for sm_90a vs their references) and the
#            FP8/kernel model paths, compiled for real
#   kernels  experiments/bench_kernels.py (copy bandwidth, bf16 GEMM peak, each kernel vs its
#            baseline), with the kernels' SASS dumped and its wgmma instructions counted
#            (HGMMA = bf16, QGMMA = fp8): whether the tensor cores run the kernels at all
#   fp8      experiments/bench_fp8_linear.py (fp8_v3 linear on device vs the CPU emulation,
#            XLA path and kernel path vs BF16 at V3 shapes)
#   train    experiments/bench_train.py --size moe_1b (tokens/s and MFU vs the measured peak)
#
# Logs go to $GPU_SUITE_OUT (default: $OUT if set, else runs/gpu_suite), one per section plus
# sass.tar.gz; the tables they print are what BENCHMARKS.md records. Needs only jax, flax, optax,
# orbax-checkpoint, numpy and pytest: no grain, tokenizer or network.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${GPU_SUITE_OUT:-${OUT:-runs/gpu_suite}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(tests kernels fp8 train)

header() {
  echo "== $1: $(date -u +%FT%TZ)"
  "$py" -c "import jax; print('jax', jax.__version__, jax.devices())"
  nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,power.limit --format=csv,noheader || true
}

run_tests() {
  "$py" -m pytest -q -rs -m gpu tests/pallas_kernels tests/nn/test_fp8_kernel_path.py \
    tests/models/test_kernels_in_model.py
}

run_kernels() {
  local dump rc
  dump="$(mktemp -d)"
  MOSAIC_GPU_DUMP_SASS=1 MOSAIC_GPU_DUMP_PTXAS=1 MOSAIC_GPU_DUMP_TO="$dump" \
    "$py" experiments/bench_kernels.py
  rc=$?
  echo "== wgmma instructions per dumped kernel (HGMMA bf16, QGMMA fp8)"
  for f in "$dump"/*; do
    [ -f "$f" ] || continue
    printf '%s HGMMA=%s QGMMA=%s\n' "$(basename "$f")" "$(grep -c HGMMA "$f")" "$(grep -c QGMMA "$f")"
  done
  tar -czf "$out/sass.tar.gz" -C "$dump" .
  return $rc
}

run_fp8() { "$py" experiments/bench_fp8_linear.py; }
run_train() { "$py" experiments/bench_train.py --size moe_1b; }

status=0
for section in "${sections[@]}"; do
  case "$section" in
    tests|kernels|fp8|train) ;;
    *) echo "unknown section '$section': choose from tests kernels fp8 train" >&2; exit 2 ;;
  esac
  log="$out/$section.log"
  { header "$section"; "run_$section"; } 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  echo "== $section exit $rc" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=$rc
done
exit "$status"
