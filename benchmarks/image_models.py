"""Training throughput of the image models for colour data, cvae_jax against the strongest PyTorch of
the same model, each cell in a fresh process, interleaved over rounds; the table shows medians.

    python -m benchmarks.image_models                                  # ResNet VAE, 32x32x3, this machine
    python -m benchmarks.image_models --model resnet,hvae --size 32,64 --batch 256 --dtype bfloat16 \\
        --impl cvae_jax,torch,torch_compile --rounds 3 --out new.jsonl  # the GPU run (gpu_run.sh)

Models (cvae_jax configs; PyTorch mirrors the ResNet VAE layer for layer): `resnet` (--preset resnet:
widths 64-128-256, 2 blocks a stage, latent 64, 10 discretized logistics) and `hvae` (--preset hvae;
cvae_jax only). Data: random 8-bit images resident on the device (throughput does not depend on
their values). Precision: `bfloat16` = cvae_jax's model.compute_dtype=bfloat16 (float32 parameters
and loss) against PyTorch's torch.autocast(bfloat16); `float32` = both in float32 (TF32 matmuls where
the framework's default allows them).

Implementations:
  cvae_jax       the library's jitted train step (make_train_step), the state donated;
  torch          eager PyTorch: nn.Module, Adam, autocast, channels-last memory (--torch-layout; on the
                 CPU, records before it was a flag ran contiguous, and are labelled torch-contiguous);
  torch_compile  the whole step (forward, backward and Adam's update) in one torch.compile'd function,
                 mode="max-autotune" on CUDA (Triton kernels and CUDA graphs), the default mode on
                 CPU, where denormals are flushed as well.
Samples/s is the median over timed blocks of `--steps` steps after a warm-up (compilation) that is
reported apart. FLOPs are counted from cvae_jax's jaxpr (3 x forward matmul/conv FLOPs), so that
both implementations are held to the same count; the peak fraction is of the device's measured
matmul peak for the compute dtype (python -m benchmarks.jax_cell matmul:bfloat16).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time

import numpy as np

from benchmarks import common

MODELS = {
    "resnet": ("vae", "resnet", []),
    "hvae": ("vae", "hvae", []),
    "sprites": ("vae", "sprites", []),  # grey 64 x 64 (run it with --size 64)
}
MIRRORED = ("resnet", "sprites")  # the models PyTorch mirrors layer for layer


def _channels(model: str) -> int:
    return 1 if model == "sprites" else 3


def _images(rng, model: str, shape) -> np.ndarray:
    """Random 8-bit colour images, or binary sprites, [batch, H, W, C] float32 in [0, 1]."""
    if model == "sprites":
        return rng.integers(0, 2, shape).astype(np.float32)
    return (rng.integers(0, 256, shape) / 255.0).astype(np.float32)


IMPLS = ("cvae_jax", "torch", "torch_compile")


def _config(model: str, size: int, batch: int, dtype: str, remat: bool, microbatches: int = 1):
    from cvae_jax.config import apply_overrides, get_config, validate

    kind, preset, extra = MODELS[model]
    overrides = [*extra, f"train.batch_size={batch}", f"model.compute_dtype={dtype}", f"model.remat={remat}"]
    overrides.append(f"train.microbatches={microbatches}")
    return validate(apply_overrides(get_config(kind, preset), overrides))


def jax_cell(spec: dict) -> dict:
    import jax

    from benchmarks.jax_cell import _device_info
    from benchmarks.models import training_flops_per_sample
    from cvae_jax.tasks.images import build, init_for
    from cvae_jax.training.step import make_train_step

    shape, batch = (spec["size"], spec["size"], _channels(spec["model"])), spec["batch"]
    chunks = spec.get("microbatches", 1)
    cfg = _config(spec["model"], spec["size"], batch, spec["dtype"], spec.get("remat", False), chunks)
    parts = build(cfg, shape, 10)
    state = init_for(parts, cfg, shape, 10)
    flops = training_flops_per_sample(parts.model, state.params, shape)
    step = jax.jit(make_train_step(parts.loss, parts.tx, microbatches=chunks), donate_argnums=0)
    rng = np.random.default_rng(0)
    batches = [
        {
            "image": jax.device_put(_images(rng, spec["model"], (batch, *shape))),
            "label": jax.device_put(rng.integers(0, 10, batch).astype(np.int32)),
        }
        for _ in range(4)
    ]
    key = jax.random.key(0)
    start = time.perf_counter()
    for i in range(3):  # compilation and warm-up
        state, metrics = step(state, batches[i % 4], key)
    jax.block_until_ready(state)
    warmup = time.perf_counter() - start
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        for i in range(spec["steps"]):
            state, metrics = step(state, batches[i % 4], key)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    stats = jax.local_devices()[0].memory_stats() or {}
    return {
        "impl": "cvae_jax",
        "loss": float(metrics["loss"]),
        "train_flops_per_sample": flops,
        "warmup_s": warmup,
        "block_s": times,
        "peak_device_bytes": stats.get("peak_bytes_in_use"),
        **_device_info(),
    }


def torch_cell(spec: dict) -> dict:
    import torch

    from benchmarks.reference_torch_images import ResNetVAE, SpritesVAE

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    if not cuda:
        torch.set_flush_denormal(True)
    shape, batch = (spec["size"], spec["size"], _channels(spec["model"])), spec["batch"]
    model = (SpritesVAE(shape) if spec["model"] == "sprites" else ResNetVAE(shape)).to(device)
    # channels-last: cuDNN's tensor-core layout, and oneDNN's blocked kernels on the CPU (--torch-layout).
    layout = torch.contiguous_format if spec.get("torch_layout") == "contiguous" else torch.channels_last
    model = model.to(memory_format=layout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=cuda and spec["impl"] == "torch_compile")
    dtype = torch.bfloat16 if spec["dtype"] == "bfloat16" else torch.float32
    rng = np.random.default_rng(0)
    batches = [
        torch.from_numpy(_images(rng, spec["model"], (batch, *shape)).transpose(0, 3, 1, 2).copy())
        .to(device)
        .contiguous(memory_format=layout)
        for _ in range(4)
    ]

    chunks = spec.get("microbatches", 1)

    def train_step(x):
        total = 0.0
        for part in x.chunk(chunks):  # gradient accumulation: the same update as the whole batch's
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = model(part) / chunks
            loss.backward()
            total = total + loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    if spec["impl"] == "torch_compile":
        train_step = torch.compile(train_step, mode="max-autotune" if cuda else "default")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    start = time.perf_counter()
    for i in range(3):
        loss = train_step(batches[i % 4])
    sync()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        for i in range(spec["steps"]):
            loss = train_step(batches[i % 4])
        sync()
        times.append(time.perf_counter() - start)
    return {
        "impl": spec["impl"],
        "loss": float(loss),
        "warmup_s": warmup,
        "block_s": times,
        "peak_device_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "torch": torch.__version__,
        "platform": device.type,
        "device_kind": torch.cuda.get_device_name() if cuda else "cpu",
    }


def run_cell(spec: dict) -> dict:
    result = common.run_cell("benchmarks.image_models", ["--cell", json.dumps(spec)])
    if result.get("kind") == "error":
        return {**result, **spec, "kind": "error"}
    samples_per_s = spec["steps"] * spec["batch"] / statistics.median(result["block_s"])
    return {"kind": "image_train", **spec, **result, "samples_per_s": samples_per_s}


def _run(record: dict) -> str:
    """The run a record belongs to: its commit (short) and command; "before stamps" for older ones."""
    stamp = record.get("provenance") or {}
    return f"{stamp['commit'][:7]} {stamp.get('command', '')}" if stamp.get("commit") else "before stamps"


def _impl_label(record: dict) -> str:
    """The implementation, with PyTorch's memory format where it is not channels-last."""
    if record["impl"] == "cvae_jax":
        return "cvae_jax"
    layout = record.get("torch_layout") or ("channels_last" if record.get("platform") == "cuda" else "contiguous")
    return record["impl"] if layout == "channels_last" else f"{record['impl']}-contiguous"


def summarize(records: list[dict], peaks: dict[str, float]) -> list[dict]:
    """Medians by cell of one run (its commit and command: cells measured side by side, on one host);
    torch cells get cvae_jax's FLOP count of the same model; the ratio column is cvae_jax's samples/s
    over this implementation's (same run, model, size, batch and dtype)."""
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("kind") == "image_train":
            cell = (r["model"], r["size"], r["batch"], r["dtype"], r.get("remat", False), r.get("microbatches", 1))
            key = (*cell, _run(r), _impl_label(r))
            cells.setdefault(key, []).append(r)
    flops = {k[:7]: rs[0]["train_flops_per_sample"] for k, rs in cells.items() if rs[0].get("train_flops_per_sample")}
    rows = []
    for key, rs in cells.items():
        med = statistics.median(r["samples_per_s"] for r in rs)
        row = {"key": key, "samples_per_s": med, "warmup_s": statistics.median(r["warmup_s"] for r in rs)}
        per_sample = flops.get(key[:7])
        if per_sample and peaks.get(key[3]):
            row["peak_fraction"] = med * per_sample / peaks[key[3]]
        ours = cells.get((*key[:7], "cvae_jax"))
        row["precision"] = common.precision(rs[0])
        if ours and key[7] != "cvae_jax" and common.precision(ours[0]) == row["precision"]:
            row["cvae_jax_over_this"] = statistics.median(r["samples_per_s"] for r in ours) / med
        row["peak_device_mib"] = max((r.get("peak_device_bytes") or 0) for r in rs) / 2**20
        rows.append(row)
    return rows


def _chunks(n: int) -> str:
    return "whole batch" if n == 1 else f"{n} chunks"


def best_of_each(rows: list[dict]) -> list[str]:
    """Per run and model cell measured at more than one chunking: each implementation's best over the
    chunkings (the same update, so the fastest is that framework's strongest), and cvae_jax's best over
    each PyTorch's best."""
    groups: dict[tuple, dict[str, tuple[float, int]]] = {}
    chunkings: dict[tuple, set[int]] = {}
    for row in rows:
        model, size, batch, _, remat, chunks, run, impl = row["key"]
        group = (model, size, batch, row["precision"], remat, run)
        chunkings.setdefault(group, set()).add(chunks)
        best = groups.setdefault(group, {})
        if impl not in best or row["samples_per_s"] > best[impl][0]:
            best[impl] = (row["samples_per_s"], chunks)
    lines = []
    for group, best in groups.items():
        if len(chunkings[group]) < 2 or "cvae_jax" not in best:
            continue
        model, size, batch, precision, _, run = group
        ours, our_chunks = best["cvae_jax"]
        against = [
            f"{impl} {value:,.0f} ({_chunks(chunks)}), {ours / value:.2f}x"
            for impl, (value, chunks) in best.items()
            if impl != "cvae_jax"
        ]
        tried = ", ".join(map(str, sorted(chunkings[group])))
        lines.append(
            f"- {model} {size}, batch {batch}, {precision}, run {run.split()[0]} (chunks {tried}): cvae_jax's "
            f"best {ours:,.0f} samples/s ({_chunks(our_chunks)}); each PyTorch's best: " + "; ".join(against)
        )
    return lines


def table(rows: list[dict]) -> str:
    if not rows:
        return ""
    out = [
        "| model | size | batch | chunks | arithmetic | remat | run | impl | samples/s | warm-up s | peak frac. | "
        "cvae_jax / this | device MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        model, size, batch, _, remat, chunks, run, impl = row["key"]
        frac = f"{row['peak_fraction']:.1%}" if "peak_fraction" in row else ""
        ratio = f"{row['cvae_jax_over_this']:.2f}x" if "cvae_jax_over_this" in row else ""
        out.append(
            f"| {model} | {size} | {batch} | {chunks} | {row['precision']} | {remat} | {run.split()[0]} | {impl} | "
            f"{row['samples_per_s']:,.0f} | "
            f"{row['warmup_s']:.1f} | {frac} | {ratio} | {row['peak_device_mib']:,.0f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet", help=f"comma-separated from {','.join(MODELS)}")
    p.add_argument("--size", default="32", help="image sizes (square), comma-separated")
    p.add_argument("--batch", default="256")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 (comma-separated)")
    p.add_argument("--impl", default="cvae_jax,torch,torch_compile")
    p.add_argument("--remat", action="store_true", help="cvae_jax cells with model.remat=true")
    p.add_argument(
        "--microbatches",
        default="1",
        help="chunks each step's batch is split into, gradients accumulated (the same update; cvae_jax's "
        "train.microbatches, PyTorch's backward per chunk), comma-separated",
    )
    p.add_argument(
        "--torch-layout",
        choices=["channels_last", "contiguous"],
        default="channels_last",
        help="PyTorch's memory format (channels_last: the faster on CUDA and, with oneDNN, mostly on CPU)",
    )
    p.add_argument("--steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per cell (median)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="append the JSON records here")
    p.add_argument("--cell", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cell:
        spec = json.loads(args.cell)
        print(json.dumps(jax_cell(spec) if spec["impl"] == "cvae_jax" else torch_cell(spec)))
        return 0

    peaks = {}
    for dtype in args.dtype.split(","):
        peak = common.run_cell("benchmarks.jax_cell", [f"matmul:{dtype}"])
        peaks[dtype] = peak.get("flops_per_s", 0.0)
        if args.out and peak.get("kind") == "matmul_peak":
            common.append_record(args.out, peak)
    records = []
    for _ in range(args.rounds):
        for model in args.model.split(","):
            for size in map(int, args.size.split(",")):
                for batch in map(int, args.batch.split(",")):
                    for dtype, chunks, impl in itertools.product(
                        args.dtype.split(","), map(int, args.microbatches.split(",")), args.impl.split(",")
                    ):
                        if impl != "cvae_jax" and model not in MIRRORED:
                            continue  # PyTorch mirrors the ResNet VAE and the sprites VAE
                        spec = {"model": model, "size": size, "batch": batch, "dtype": dtype, "impl": impl}
                        spec.update(steps=args.steps, repeats=args.repeats, remat=args.remat and impl == "cvae_jax")
                        if chunks > 1:
                            spec["microbatches"] = chunks
                        if impl != "cvae_jax":
                            spec["torch_layout"] = args.torch_layout
                        record = run_cell(spec)
                        records.append(record)
                        print(json.dumps(record), flush=True)
                        if args.out:
                            common.append_record(args.out, record)
    print(table(summarize(records, peaks)))
    print("matmul peaks (FLOP/s): " + ", ".join(f"{k} {v:.3g}" for k, v in peaks.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
