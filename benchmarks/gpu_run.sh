#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md as one script (about 7 minutes on one H100/H200),
# from the repository root, on a machine whose python3 already holds CUDA jax, flax, optax and
# torch (the project is installed without its dependencies, so that CUDA jax is kept):
#
#     OUT=/tmp/gpu bash benchmarks/gpu_run.sh
#
# Writes to $OUT: machine.txt, train.log (the README's main job, end to end), gpu.jsonl and
# gpu.md (cvae_jax against PyTorch and torch.compile), mlp4096.jsonl/.md (the MLP VAE at batch 4096
# over longer epochs, float32 and bfloat16), profile.jsonl (where its step goes, with XLA flags).
#
#     OUT=/tmp/gpu bash benchmarks/gpu_run.sh tests   # instead: the unit tests that run on a GPU (~2.5 min)
#
# runs the model, objective, step, prior, checkpoint, evaluation and CLI tests on the GPU (full
# float32 matmul precision, so that tolerances made for the CPU hold) and writes $OUT/tests.log.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_run}
mkdir -p "$OUT"
py=${PYTHON:-python3}

$py -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
if [ "${1:-}" = tests ]; then
  CVAE_JAX_TEST_FULL_OPT=1 JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_PREALLOCATE=false \
    timeout 400 $py -m pytest -q -n 6 -p no:cacheprovider -rf --tb=short tests/test_models.py \
    tests/test_objectives.py tests/test_train_step.py tests/test_priors.py tests/test_distributions.py \
    tests/test_checkpoint.py tests/test_evaluate.py tests/test_custom_prior.py tests/test_cli.py 2>&1 \
    | tee "$OUT/tests.log" | tail -n 60
  exit "${PIPESTATUS[0]}"
fi
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv
  $py -c "import sys, jax, flax, optax, torch; print('python', sys.version.split()[0], 'jax', jax.__version__,
'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
} 2>&1 | tee "$OUT/machine.txt"

# 1. The README's main job on the embedded digits, on the GPU.
start=$(date +%s)
timeout 150 $py -m cvae_jax train --workdir /tmp/gpu_quickstart --no-progress >"$OUT/train.log" 2>&1
echo "train exit $? after $(($(date +%s) - start)) s" | tee -a "$OUT/train.log"
tail -n 2 /tmp/gpu_quickstart/metrics.jsonl 2>/dev/null | tee -a "$OUT/train.log"

# 2. cvae_jax (fused epochs) against the PyTorch references, one fresh process per cell.
R="--rounds 1 --repeats 3 --json"
timeout 260 $py -m benchmarks.throughput --model mlp-vae,article-cvae --batch-size 128,4096 --mode fused \
  --compare torch,torch_compile --samples 61440 $R --out "$OUT/gpu.jsonl" >/dev/null 2>"$OUT/gpu.err"
$py -m benchmarks.throughput --table "$OUT/gpu.jsonl" | tee "$OUT/gpu.md"

# 3. The MLP VAE at batch 4096 (the GPU target: > 50% of the matmul peak), 60 steps per epoch,
#    float32 and bfloat16 compute (each against the matmul peak of its own dtype).
for set in "" "--set model.compute_dtype=bfloat16"; do
  timeout 90 $py -m benchmarks.throughput --model mlp-vae --batch-size 4096 --mode fused --samples 245760 \
    $R $set --out "$OUT/mlp4096.jsonl" >/dev/null 2>>"$OUT/mlp4096.err"
done
$py -m benchmarks.throughput --table "$OUT/mlp4096.jsonl" | tee "$OUT/mlp4096.md"

# 4. Where its step goes, with XLA's defaults and with Triton allowed to fuse any GEMM.
for flags in "" "--xla_gpu_triton_gemm_any=true"; do
  XLA_FLAGS="$flags" timeout 60 $py -m benchmarks.step_profile --model mlp-vae --batch-size 4096 --json \
    | grep "^{" | sed "s|^{|{\"xla_flags\": \"$flags\", |" | tee -a "$OUT/profile.jsonl"
done
