"""What every benchmark cell shares, without importing any framework: the architectures as plain
data, the random MNIST-shaped data, and the result record."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SHAPE, NUM_CLASSES = (28, 28, 1), 10


class CellError(RuntimeError):
    """A cell's process failed or printed no JSON record."""


def run_in_fresh_process(args: list[str], env: dict[str, str] | None = None, **kwargs) -> dict[str, Any]:
    """Runs `python ARGS` in a fresh process (a measured cell: nothing compiled or cached carries
    over) and returns the last JSON object it printed on a line of its own; raises CellError with the
    end of its stderr when it fails or prints none. `env` adds to this process's environment;
    `kwargs` go to subprocess.run (timeout, cwd)."""
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=dict(os.environ, **(env or {})), **kwargs
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise CellError(f"{' '.join(args[:2])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_cell(module: str, args: list[str], env: dict[str, str] | None = None, timeout: int = 1800) -> dict[str, Any]:
    """The one runner of measured cells (dense, image and evaluation benchmarks alike): `python -m
    module ARGS` in a fresh process, its JSON record, or an error record naming the module and the end
    of its stderr. The runner that writes records stamps them (append_record)."""
    try:
        return run_in_fresh_process(["-m", module, *args], env, timeout=timeout)
    except CellError as e:
        return {"kind": "error", "module": module, "arg": " ".join(args), "error": str(e).splitlines()[-3:]}


def _arch(
    conditional=False,
    latent=2,
    encoder_conv=(),
    conv_stride=2,
    encoder_hidden=(),
    decoder_hidden=(),
    decoder_conv=(),
    condition_site="input",
) -> dict[str, Any]:
    return {
        "conditional": conditional,
        "latent": latent,
        "encoder_conv": list(encoder_conv),
        "conv_stride": conv_stride,
        "encoder_hidden": list(encoder_hidden),
        "decoder_hidden": list(decoder_hidden),
        "decoder_conv": list(decoder_conv),
        "condition_site": condition_site,
    }


# The benchmark models as plain data, for the reference implementations (which must not import JAX).
# tests/test_benchmarks.py checks that they equal the cvae_jax configs of benchmarks/models.py.
ARCH = {
    "article-vae": _arch(latent=2, encoder_hidden=[256], decoder_hidden=[256]),
    "article-cvae": _arch(
        conditional=True,
        latent=2,
        encoder_conv=[32],
        conv_stride=1,
        encoder_hidden=[64],
        decoder_hidden=[64],
        condition_site="head",
    ),
    "mlp-vae": _arch(latent=32, encoder_hidden=[512, 512], decoder_hidden=[512, 512]),
    "conv-vae": _arch(
        latent=16,
        encoder_conv=[32, 64],
        conv_stride=2,
        encoder_hidden=[256],
        decoder_hidden=[256],
        decoder_conv=[64, 32],
    ),
}


# Widest first: the vector extension that bounds a float32 matmul on this CPU.
_VECTOR_ISAS = ("avx512f", "avx2", "avx", "sse4_2", "asimd")


def describe_cpu(cpuinfo: str) -> dict[str, Any]:
    """The host CPU from /proc/cpuinfo text: model name, family/model numbers (which tell, say, a Zen 3
    from a Zen 4 EPYC when both are named "AMD EPYC") and the widest vector ISA. Instances of one
    "machine class" differ (session 18's AVX2 EPYC measured ~2.5x lower than earlier instances);
    ratios measured in one run stay comparable, absolutes only with the same CPU."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    family, model = fields.get("cpu family"), fields.get("model")
    return {
        "cpu_model": fields.get("model name", "?"),
        "cpu_family_model": f"{family}/{model}" if family and model else "?",
        "cpu_isa": next((isa for isa in _VECTOR_ISAS if isa in flags), "?"),
    }


def host_cpu() -> dict[str, Any]:
    """describe_cpu of this machine; "?" fields where /proc/cpuinfo cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return describe_cpu(f.read())
    except OSError:
        return describe_cpu("")


def training_data(samples: int, batch: int, seed: int = 0, data: str = "") -> tuple[np.ndarray, np.ndarray]:
    """`samples` rounded down to whole batches: float32 images in [0, 1) [N, 28, 28, 1], int labels [N];
    random, or with `data` (a folder of MNIST-format IDX files, e.g. Fashion-MNIST) its first training
    images, scaled to [0, 1]."""
    n = (samples // batch) * batch
    if data:
        return real_data(data, n)
    rng = np.random.default_rng(seed)
    return rng.random((n, *IMAGE_SHAPE), np.float32), rng.integers(0, NUM_CLASSES, n).astype(np.int64)


def real_data(folder: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n training images ([n, 28, 28, 1] float32 in [0, 1]) and labels of an IDX folder."""
    from cvae_jax.data.idx import find_split_files, read_idx

    images_path, labels_path = find_split_files(Path(folder), "train")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.shape[1:3] != IMAGE_SHAPE[:2] or len(images) < n:
        raise SystemExit(
            f"--data {folder}: {images.shape[0]} training images of {images.shape[1:]}; the benchmark "
            f"needs {n} of {IMAGE_SHAPE[:2]} (lower --samples)"
        )
    return (images[:n, ..., None] / np.float32(255)).astype(np.float32), labels[:n].astype(np.int64)


def precision(r: dict[str, Any]) -> str:
    """A cell's arithmetic, which a speed ratio must hold equal on both sides: "bf16" (cvae_jax's
    model.compute_dtype=bfloat16, PyTorch's bfloat16 autocast), or float32 with its matmul precision:
    "fp32" on a CPU (full float32 always), and on a GPU "fp32, TF32 matmuls" or "fp32, full matmuls".
    Records that do not say (`matmul_precision`, written since cells record it) follow each library's
    default: JAX runs float32 matmuls and convolutions as TF32 on these GPUs, PyTorch keeps float32
    matmuls (torch.backends.cuda.matmul.allow_tf32 is off by default) and runs convolutions as TF32
    (torch.backends.cudnn.allow_tf32 is on), so its convolutional image models count as TF32."""
    dtype = r.get("compute_dtype") or r.get("dtype") or "float32"
    if dtype == "bfloat16":
        return "bf16"
    if r.get("platform", "cpu") == "cpu":
        return "fp32"
    default = "tf32" if r.get("impl") == "cvae_jax" or r.get("kind") == "image_train" else "full"
    found = r.get("matmul_precision") or default  # the image models are convolutions: TF32 in cuDNN too
    return f"fp32, {'TF32' if found == 'tf32' else 'full'} matmuls"


def append_record(path: str | Path, result: dict[str, Any]) -> dict[str, Any]:
    """Appends `result`, stamped with the commit, command and host that produced it, as a JSON line of
    `path` (a records file for `python -m benchmarks.report --merge`); returns the stamped record."""
    from cvae_jax import provenance  # the runner's process, never a measured cell's

    stamped = {**result, "provenance": provenance.stamp()}
    with open(path, "a") as f:
        f.write(provenance.portable(json.dumps(stamped)) + "\n")
    return stamped


def record(
    impl: str, spec: dict[str, Any], epoch_s: list[float], first_epoch_s: float, n: int, **extra: Any
) -> dict[str, Any]:
    """One JSON result: steady-state samples/s from the median epoch; warm-up = first epoch - median."""
    seconds = statistics.median(epoch_s)
    batch = int(spec["batch"])
    return {
        "kind": "train",
        "impl": impl,
        "model": spec["model"],
        "batch": batch,
        "mode": "",
        "devices": 1,
        "samples_per_s": n / seconds,
        "steps_per_s": n / batch / seconds,
        "compile_s": max(first_epoch_s - seconds, 0.0),
        "epoch_s": epoch_s,
        "steps_per_epoch": n // batch,
        "peak_host_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "data": spec.get("data") or "random",
        **{"platform": "cpu", **extra},
    }
