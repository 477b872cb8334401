#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md as one script, from the repository root, on a machine
# whose python3 already holds CUDA jax, flax, optax and torch (the project is installed without its
# dependencies, so that CUDA jax is kept):
#
#     OUT=/tmp/gpu bash benchmarks/gpu_run.sh [SECTION ...]
#     BUNDLE=$OUT/gpu_run.tgz OUT=/tmp/gpu bash benchmarks/gpu_run.sh [SECTION ...]   # device tool
#
# Sections (default: all but tests, in this order):
#   tests    the fast unit tests on the GPU (full float32 matmul precision, so that tolerances made
#            for the CPU hold): $OUT/tests.log
#   main     the README's main job on the embedded digits, end to end: $OUT/train.log
#   kernels  model.kernels=flax against =tuned per model (auto picks flax on a GPU): $OUT/kernels.jsonl
#   compare  cvae_jax (fused epochs; TF32 and full float32) against PyTorch and torch.compile: $OUT/gpu.jsonl
#   mlp4096  the MLP VAE at batch 4096 over longer epochs, float32 and bfloat16: $OUT/mlp4096.jsonl
#   profile  where the MLP VAE's step goes, with XLA flags: $OUT/profile.jsonl
#   images   the ResNet VAE (32x32x3, batch 256, bfloat16 and float32) against eager PyTorch and the
#            whole step torch.compile'd (max-autotune: Triton kernels, CUDA graphs), then the
#            hierarchical VAE and 64x64, cvae_jax only: $OUT/images.jsonl
# Every section also writes its table (.md), and its wall time to $OUT/sections.txt. With BUNDLE=FILE.tgz
# every finished section also refreshes one archive of $OUT (the device tool returns few files, and
# what a section finished before a time limit still comes back). Merge a .jsonl into the records with
# `python -m benchmarks.report --merge FILE gpu_h200` (the device class), which rewrites RESULTS.md.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_run}
mkdir -p "$OUT"
py=${PYTHON:-python3}
sections=${*:-main images kernels compare mlp4096 profile}
R="--rounds 1 --repeats 3 --json"

$py -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv
  $py -c "import sys, jax, flax, optax; print('python', sys.version.split()[0], 'jax', jax.__version__,
'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  $py -c "import torch; print('torch', torch.__version__)" 2>&1 | tail -1
} 2>&1 | tee "$OUT/machine.txt"

for section in $sections; do
  t0=$(date +%s)
  case $section in
  tests)
    CVAE_JAX_TEST_FULL_OPT=1 JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_PREALLOCATE=false \
      timeout 300 $py -m pytest -q -n 6 -m "not slow" -p no:cacheprovider -rf --tb=short tests/test_models.py \
      tests/test_objectives.py tests/test_train_step.py tests/test_priors.py tests/test_distributions.py \
      tests/test_checkpoint.py tests/test_evaluate.py tests/test_custom_prior.py tests/test_cli.py \
      tests/test_tasks.py tests/test_config.py 2>&1 | tee "$OUT/tests.log" | tail -n 40
    ;;
  main)
    start=$(date +%s)
    # The GPU image has no tensorboardX (installed --no-deps), so the run writes no event files.
    timeout 150 $py -m cvae_jax train --workdir /tmp/gpu_quickstart --no-progress --set train.tensorboard=false >"$OUT/train.log" 2>&1
    echo "train exit $? after $(($(date +%s) - start)) s" | tee -a "$OUT/train.log"
    tail -n 2 /tmp/gpu_quickstart/metrics.jsonl 2>/dev/null | tee -a "$OUT/train.log"
    ;;
  kernels)
    for k in flax tuned; do
      timeout 200 $py -m benchmarks.throughput --model article-cvae,conv-vae,mlp-vae --batch-size 128,4096 \
        --mode fused --samples 61440 $R --set model.kernels=$k --out "$OUT/kernels.jsonl" >/dev/null 2>>"$OUT/kernels.err"
    done
    $py -m benchmarks.throughput --table "$OUT/kernels.jsonl" | tee "$OUT/kernels.md"
    ;;
  compare)
    timeout 260 $py -m benchmarks.throughput --model mlp-vae,article-cvae --batch-size 128,4096 --mode fused \
      --compare torch,torch_compile --samples 61440 $R --out "$OUT/gpu.jsonl" >/dev/null 2>"$OUT/gpu.err"
    # cvae_jax in full float32 too (JAX's default is TF32 matmuls), the like-for-like partner of
    # PyTorch's float32 cells, which keep full-precision matmuls by default.
    JAX_DEFAULT_MATMUL_PRECISION=highest timeout 120 $py -m benchmarks.throughput --model mlp-vae,article-cvae \
      --batch-size 128,4096 --mode fused --samples 61440 $R --out "$OUT/gpu.jsonl" >/dev/null 2>>"$OUT/gpu.err"
    $py -m benchmarks.throughput --table "$OUT/gpu.jsonl" | tee "$OUT/gpu.md"
    ;;
  mlp4096)
    for set in "" "--set model.compute_dtype=bfloat16"; do
      timeout 90 $py -m benchmarks.throughput --model mlp-vae --batch-size 4096 --mode fused --samples 245760 \
        $R $set --out "$OUT/mlp4096.jsonl" >/dev/null 2>>"$OUT/mlp4096.err"
    done
    $py -m benchmarks.throughput --table "$OUT/mlp4096.jsonl" | tee "$OUT/mlp4096.md"
    ;;
  profile)
    for flags in "" "--xla_gpu_triton_gemm_any=true"; do
      XLA_FLAGS="$flags" timeout 60 $py -m benchmarks.step_profile --model mlp-vae --batch-size 4096 --json \
        | grep "^{" | sed "s|^{|{\"xla_flags\": \"$flags\", |" | tee -a "$OUT/profile.jsonl"
    done
    ;;
  images)
    timeout 420 $py -m benchmarks.image_models --model resnet --size 32 --batch 256 --dtype bfloat16,float32 \
      --impl cvae_jax,torch,torch_compile --rounds 2 --out "$OUT/images.jsonl" 2>"$OUT/images.err" | tee "$OUT/images.md"
    timeout 240 $py -m benchmarks.image_models --model hvae,resnet --size 32,64 --batch 256 --dtype bfloat16 \
      --impl cvae_jax --rounds 1 --out "$OUT/images.jsonl" 2>>"$OUT/images.err" | tee -a "$OUT/images.md"
    ;;
  *) echo "unknown section $section" >&2; exit 2 ;;
  esac
  echo "$section: $(($(date +%s) - t0)) s" | tee -a "$OUT/sections.txt"
  if [ -n "${BUNDLE:-}" ]; then tar -czf "$BUNDLE.part" --exclude "$(basename "$BUNDLE")*" -C "$OUT" . && mv "$BUNDLE.part" "$BUNDLE"; fi
done
