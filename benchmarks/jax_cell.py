"""One cvae_jax measurement in this (fresh) process; prints one JSON line.

    python -m benchmarks.jax_cell '{"model": "article-vae", "batch": 128, "mode": "fused", "devices": 1,
                                    "samples": 60000, "repeats": 5}'
    python -m benchmarks.jax_cell matmul           # the device's float32 matmul peak
    python -m benchmarks.jax_cell matmul:bfloat16  # ... and its bfloat16 peak (float32 accumulation)

Modes: "step" = a jitted train step per batch, fed from host (numpy) arrays shuffled on the host;
"device" = data resident on the devices, one compiled step per call (batch gathered on device);
"fused" = data resident, a whole epoch of steps fused into one compiled lax.scan.
Every timing blocks on the result (block_until_ready); compilation is timed separately (AOT) and
excluded from throughput; samples/s is the median over `repeats` epochs.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import jax
import numpy as np

from benchmarks.common import host_cpu, training_data
from benchmarks.models import IMAGE_SHAPE, NUM_CLASSES, config_for, training_flops_per_sample
from cvae_jax.config import ParallelConfig
from cvae_jax.tasks.images import build, init_for
from cvae_jax.training import parallel
from cvae_jax.training import program as loop
from cvae_jax.training.step import make_train_step


def _device_info() -> dict:
    dev = jax.local_devices()[0]
    # float32 matmuls: JAX's default precision runs them as TF32 on GPUs that have it; "highest" (e.g.
    # JAX_DEFAULT_MATMUL_PRECISION=highest) keeps full float32. CPUs always compute full float32.
    setting = str(jax.config.jax_default_matmul_precision or "default").lower()
    matmul = "full" if dev.platform == "cpu" or setting in ("highest", "float32") else "tf32"
    return {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "jax": jax.__version__,
        "matmul_precision": matmul,
        **host_cpu(),
    }


def matmul_flops(n: int, repeats: int = 10, budget_s: float = 1.5, dtype: str = "float32") -> float:
    """FLOP/s of an n x n matmul of `dtype` inputs on the default device, at JAX's default precision
    (the models' own): the median of `repeats` products, or of as many as fit in `budget_s` seconds,
    but at least 3 (on a 2-core CPU one float32 n = 4096 product takes ~1 s)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    times = []
    while len(times) < repeats and (len(times) < 3 or sum(times) < budget_s):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def matmul_peak(dtype: str = "float32") -> dict:
    """The device's matmul peak for `dtype` inputs: the best of a few large square sizes. A model
    computing in bfloat16 (model.compute_dtype) is measured against the bfloat16 peak."""
    sizes = (1024, 2048, 4096) if jax.default_backend() == "cpu" else (4096, 8192, 16384)
    by_size = {n: matmul_flops(n, dtype=dtype) for n in sizes}
    best = max(by_size, key=by_size.get)
    return {
        "kind": "matmul_peak",
        "dtype": dtype,
        "n": best,
        "flops_per_s": by_size[best],
        "by_size": {str(n): f for n, f in by_size.items()},
        **_device_info(),
    }


def _memory() -> dict:
    stats = jax.local_devices()[0].memory_stats() or {}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"peak_device_bytes": stats.get("peak_bytes_in_use"), "peak_host_bytes": rss}


def _timed(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def measure(spec: dict) -> dict:
    model_name, batch, mode = spec["model"], int(spec["batch"]), spec["mode"]
    devices, n, repeats = int(spec.get("devices", 1)), int(spec.get("samples", 60000)), int(spec.get("repeats", 5))
    config = config_for(model_name, batch, spec.get("set", []))
    layout = parallel.make_layout(ParallelConfig(num_devices=devices))
    global_batch = parallel.global_batch_size(batch, config.parallel, layout.num_shards)
    images, labels = training_data(n, 1, data=spec.get("data", ""))
    arrays = {"image": images, "label": labels.astype(np.int32)}
    parts = build(config, IMAGE_SHAPE, NUM_CLASSES)
    host_state = init_for(parts, config, IMAGE_SHAPE, NUM_CLASSES)
    flops = training_flops_per_sample(parts.model, host_state.params)
    state = layout.put_replicated(host_state)
    key_data = np.asarray(jax.random.key_data(jax.random.key(0)))

    if mode == "step":
        rep, sh = layout.replicated(), layout.sharded()
        step = jax.jit(
            make_train_step(
                parts.loss,
                parts.tx,
                num_shards=layout.num_shards,
                microbatches=config.train.microbatches,
                unroll_microbatches=config.train.unroll_microbatches,
            ),
            in_shardings=(rep, sh, rep),
            out_shardings=(rep, rep),
            donate_argnums=0,
        )
        steps = n // global_batch
        key = jax.random.key(0)
        t = time.perf_counter()
        compiled = step.lower(state, {k: v[:global_batch] for k, v in arrays.items()}, key).compile()
        compile_s = time.perf_counter() - t

        orders = np.random.default_rng(1)

        def epoch():
            nonlocal state
            order = orders.permutation(n)  # a new order each epoch, drawn on the host as users do
            for i in range(steps):
                idx = order[i * global_batch : (i + 1) * global_batch]
                state, metrics = compiled(state, {k: v[idx] for k, v in arrays.items()}, key)
            return state
    else:
        rows = parallel.shard_rows(arrays, layout.num_shards, layout.local_shards, 0)
        program = loop.make_program(
            layout,
            parts.loss,
            parts.tx,
            rows,
            global_batch,
            lambda spe: 1 if mode == "device" else spe,
            config.train.microbatches,
            config.train.unroll_microbatches,
        )
        steps = program.steps_per_epoch
        perm = program.permute(key_data, 0)
        t = time.perf_counter()
        compiled = {
            size: fn.lower(state, program.data, perm, 0, key_data).compile() for size, fn in program.calls.items()
        }
        compile_s = time.perf_counter() - t

        def epoch():
            nonlocal state
            perm = program.permute(key_data, 1)
            for first, size in program.call_sizes():
                state, metrics = compiled[size](state, program.data, perm, first, key_data)
            return state

    _timed(epoch)  # warm-up (allocations, caches); not counted
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = [_timed(epoch) for _ in range(repeats)]
    # Host pages touched for the first time while timing: temporaries that the allocator handed back
    # to the OS and faults in again on every call (see "Host memory" in benchmarks/RESULTS.md).
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (repeats * steps)
    seconds = statistics.median(times)
    samples_per_s = steps * global_batch / seconds
    label = f"{mode} ({' '.join(spec['set'])})" if spec.get("set") else mode
    return {
        "kind": "train",
        "impl": "cvae_jax",
        "model": model_name,
        "batch": global_batch,
        "mode": label,
        "devices": layout.num_shards,
        "samples_per_s": samples_per_s,
        "steps_per_s": steps / seconds,
        "compile_s": compile_s,
        "epoch_s": times,
        "steps_per_epoch": steps,
        "train_flops_per_sample": flops,
        "achieved_flops_per_s": flops * samples_per_s,
        "host_page_faults_per_step": faults,
        "compute_dtype": config.model.compute_dtype,
        "data": spec.get("data") or "random",
        **_memory(),
        **_device_info(),
    }


def no_compile_cache() -> None:
    """Compile times are measured, so never loaded from a persistent compilation cache that the user
    or the test suite (JAX_COMPILATION_CACHE_DIR) has set up; called by each cell process."""
    jax.config.update("jax_enable_compilation_cache", False)


if __name__ == "__main__":
    from cvae_jax.cli.host import keep_freed_memory

    keep_freed_memory()  # what `cvae-jax` does at its entry point (before JAX allocates)
    no_compile_cache()
    arg = sys.argv[1]
    if arg.startswith("matmul"):
        print(json.dumps(matmul_peak(*arg.split(":")[1:])))
    else:
        print(json.dumps(measure(json.loads(arg))))
