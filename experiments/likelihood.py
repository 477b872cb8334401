"""A likelihood benchmark to set beside the literature: one-stochastic-layer MLP VAEs (784-512-512-32,
Bernoulli decoder) on dynamically binarized images, scored by importance-sampled test NLL (K = 5,000)
on one fixed binarization of the test images, saved with the results so that any implementation can
score the same bits. Every row runs for several seeds; a same-data PyTorch VAE runs interleaved with
ours (same model, budget, training rows and test bits), each cell in a fresh process.

    python experiments/likelihood.py --data /usr/share/datasets/fashion-mnist          # CPU protocol
    python experiments/likelihood.py --data /usr/share/datasets/fashion-mnist --full   # GPU protocol
    python experiments/likelihood.py --data DIR_WITH_MNIST_IDX --name mnist            # same code path

The CPU protocol (10 epochs, the first 2,000 test images) fits a 2-core machine; --full trains up to
200 epochs with early stopping on the validation split (patience 20, the best checkpoint scored) and
scores all test images. The training split is the data set's training images less a seeded 10 %
validation hold-out; the test images are read only to report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"

# The rows: cvae_jax config overrides on top of the MLP VAE.
MODELS = {
    "VAE": [],
    "IWAE (k=5)": ["train.objective=iwae", "train.iwae_samples=5"],
    "IWAE (k=50)": ["train.objective=iwae", "train.iwae_samples=50"],
    "VampPrior (500 pseudo-inputs)": ["model.prior=vamp", "model.prior_components=500"],
    "flow prior (RealNVP x4)": ["model.prior=flow", "model.flow_layers=4"],
    "MIWAE (M=4, K=5)": ["train.objective=miwae", "train.miwae_groups=4", "train.iwae_samples=5"],
    "VAE, IAF posterior (2 steps)": ["model.posterior=iaf"],
    "VAE, full-covariance posterior": ["model.posterior=full_covariance"],
}
BASE = [
    "model.latent_dim=32",
    "model.encoder_hidden=[512,512]",
    "model.decoder_hidden=[512,512]",
    "data.source=idx",
    "data.binarize=true",
    "train.batch_size=128",
    "train.learning_rate=1e-3",
    "train.optimizer=adam",
    "checkpoint.every_epochs=0",
]
PROTOCOLS = {
    "cpu": {"epochs": 10, "num_examples": 2000, "patience": 0},
    "full": {"epochs": 200, "num_examples": 10_000, "patience": 20},
}


def test_bits_path(name: str) -> Path:
    return RESULTS / f"likelihood_{name}_test_bits.npz"


def save_test_bits(folder: str, name: str) -> Path:
    """Binarizes the test images once (x ~ Bernoulli(intensity), seed 2015) and saves the bits
    (np.packbits by row), the labels and the source file's SHA-256; an existing file is reused
    after checking that it came from the same test images."""
    from cvae_jax.data.idx import find_split_files, read_idx

    images_path, labels_path = find_split_files(Path(folder), "test")
    digest = hashlib.sha256(images_path.read_bytes()).hexdigest()
    path = test_bits_path(name)
    if path.exists():
        if str(np.load(path)["source_sha256"]) != digest:
            raise SystemExit(f"{path} was binarized from other test images than {images_path}; use another --name")
        return path
    x = read_idx(images_path).astype(np.float32) / 255.0
    bits = np.random.default_rng(2015).uniform(size=x.shape) < x
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        bits=np.packbits(bits.reshape(len(x), -1), axis=1),
        shape=np.array(x.shape),
        labels=read_idx(labels_path),
        source_sha256=np.array(digest),
    )
    return path


def read_test_bits(path: str | Path, num_examples: int) -> np.ndarray:
    """The first `num_examples` saved test images as float32 0/1 [N, H, W, 1]."""
    saved = np.load(path)
    shape = tuple(saved["shape"])
    bits = np.unpackbits(saved["bits"], axis=1)[:num_examples, : int(np.prod(shape[1:]))]
    return bits.reshape(-1, *shape[1:], 1).astype(np.float32)


def jax_cell(spec: dict) -> dict:
    import jax

    from cvae_jax.apps.evaluate import make_log_likelihood
    from cvae_jax.config import apply_overrides, get_config
    from cvae_jax.core import objectives
    from cvae_jax.tasks.images import load_run, train_and_evaluate

    overrides = [*BASE, f"data.path={spec['data']}", f"seed={spec['seed']}", f"train.epochs={spec['epochs']}"]
    if spec["patience"]:  # early stopping on validation, and a checkpoint every epoch for "best" to choose from
        overrides += [f"train.early_stopping_patience={spec['patience']}", "checkpoint.every_epochs=1"]
    cfg = apply_overrides(get_config("vae"), overrides + MODELS[spec["model"]])
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        run = train_and_evaluate(cfg, workdir, progress=False)
        train_s = time.perf_counter() - start
        model, params = run.model, (load_run(workdir, "best").params if spec["patience"] else run.state.params)
        epochs_run = max(h["epoch"] for h in run.history)
    images = read_test_bits(spec["bits"], spec["num_examples"])
    labels = np.zeros(len(images), np.int32)
    key = jax.random.key(spec["seed"])
    log_px = jax.jit(make_log_likelihood(model, num_classes=10, num_samples=spec["k"], chunk=20))
    terms = jax.jit(objectives.make_elbo_terms(model, num_classes=10, binarize=False))
    start = time.perf_counter()
    ll = [
        np.asarray(
            log_px(params, {"image": images[i : i + 100], "label": labels[i : i + 100]}, jax.random.fold_in(key, i))
        )
        for i in range(0, len(images), 100)
    ]
    nll_s = time.perf_counter() - start
    neg_elbo = [
        np.asarray(terms(params, {"image": images[i : i + 1000], "label": labels[i : i + 1000]}, key)["neg_elbo"])
        for i in range(0, len(images), 1000)
    ]
    return {
        "impl": "cvae_jax",
        "nll": float(-np.concatenate(ll).mean()),
        "neg_elbo": float(np.concatenate(neg_elbo).mean()),
        "train_seconds": train_s,
        "eval_seconds": time.perf_counter() - start,
        "nll_seconds": nll_s,
        "epochs_run": epochs_run,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def export_training_rows(folder: str, seed: int, out: Path) -> None:
    """The training images cvae_jax trains on for `seed` (its validation hold-out removed), as uint8."""
    from cvae_jax.config import apply_overrides, get_config
    from cvae_jax.data import images as data

    cfg = apply_overrides(get_config("vae"), [*BASE, f"data.path={folder}", f"seed={seed}"])
    dataset = data.hold_out(data.load(cfg.data, progress=False), cfg.data.validation, seed)
    np.savez(out, images=np.round(dataset.train.images * 255).astype(np.uint8))


def run_cell(spec: dict) -> dict:
    from benchmarks.common import CellError, run_in_fresh_process

    if spec["impl"] == "torch":
        args = ["-m", "benchmarks.reference_torch", json.dumps({"protocol": "likelihood", **spec})]
    else:
        args = [__file__, "--cell", json.dumps(spec)]
    try:
        return {**spec, **run_in_fresh_process(args, cwd=Path(__file__).parent.parent)}
    except CellError as e:
        raise SystemExit(f"{spec['impl']} {spec['model']} seed {spec['seed']}: {e}") from None


def summarize(cells: list[dict]) -> list[dict]:
    """One row per (model, impl): mean and std over seeds of NLL and -ELBO, median wall times."""
    rows = []
    for model in dict.fromkeys(c["model"] for c in cells):
        for impl in ("cvae_jax", "torch"):
            group = [c for c in cells if c["model"] == model and c["impl"] == impl]
            if not group:
                continue
            row = {"model": model, "impl": impl, "seeds": [c["seed"] for c in group]}
            for metric in ("nll", "neg_elbo"):
                values = [c[metric] for c in group]
                row[metric] = {
                    "mean": statistics.mean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                }
            for metric in ("train_seconds", "eval_seconds"):
                row[metric] = statistics.median(c[metric] for c in group)
            rows.append(row)
    return rows


def table(result: dict) -> str:
    lines = [
        f"| model | implementation | test NLL (K = {result['k']:,}) | test −ELBO | training (median) "
        "| evaluation (median) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        impl = "cvae_jax" if row["impl"] == "cvae_jax" else "PyTorch (same data)"
        lines.append(
            f"| {row['model']} | {impl} | {row['nll']['mean']:.2f} ± {row['nll']['std']:.2f} | "
            f"{row['neg_elbo']['mean']:.2f} ± {row['neg_elbo']['std']:.2f} | {row['train_seconds']:.0f} s | "
            f"{row['eval_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder of the four MNIST-format IDX files (e.g. Debian's Fashion-MNIST)")
    p.add_argument("--name", help="data set name for the result files (default: the folder's name)")
    p.add_argument("--full", action="store_true", help="the GPU protocol: up to 200 epochs, all test images")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--epochs", type=int, help="override the protocol's epochs")
    p.add_argument("--num-examples", type=int, help="override the protocol's number of test images")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the existing results file's cells of the other models (the same protocol); replace --models'",
    )
    p.add_argument("--cell", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cell:
        print(json.dumps(jax_cell(json.loads(args.cell))))
        return 0
    if not args.data:
        p.error("--data is required (a folder of IDX files)")
    if args.k % 20:
        p.error("--k must be a multiple of 20")
    name = args.name or Path(args.data).name.replace("-", "_")
    protocol = dict(PROTOCOLS["full" if args.full else "cpu"])
    protocol.update({k: v for k, v in (("epochs", args.epochs), ("num_examples", args.num_examples)) if v})
    bits = save_test_bits(args.data, name)
    common = {"data": args.data, "bits": str(bits), "k": args.k, **protocol}
    start = time.perf_counter()
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for model in args.models:
                impls = ["cvae_jax"] + (["torch"] if model == "VAE" and not args.no_torch else [])
                for impl in impls:
                    spec = {"impl": impl, "model": model, "seed": seed, **common}
                    if impl == "torch":
                        train = Path(tmp) / f"train_{seed}.npz"
                        if not train.exists():
                            export_training_rows(args.data, seed, train)
                        spec.update(train=str(train), arch=_mlp_arch(), batch=128, learning_rate=1e-3)
                    cells.append(run_cell(spec))
                    c = cells[-1]
                    print(
                        f"{impl} {model} seed {seed}: NLL {c['nll']:.2f}, -ELBO {c['neg_elbo']:.2f}, "
                        f"train {c['train_seconds']:.0f} s, eval {c['eval_seconds']:.0f} s",
                        flush=True,
                    )
    from cvae_jax import provenance

    command = "python experiments/likelihood.py " + " ".join(argv if argv is not None else sys.argv[1:])
    cells = [{k: v for k, v in c.items() if k not in ("train", "arch", "bits", "data")} for c in cells]
    out = RESULTS / f"likelihood_{name}{'_full' if args.full else ''}.json"
    runs = [{"command": command, "models": args.models, "provenance": provenance.stamp()}]
    if args.merge and out.exists():  # the other models' cells, measured by an earlier command
        previous = json.loads(out.read_text())
        fixed = ("protocol", "k", "epochs", "num_examples", "patience")
        if any(
            previous.get(k) != v
            for k, v in zip(fixed, ("full" if args.full else "cpu", *[common[k] for k in fixed[1:]]))
        ):
            raise SystemExit(f"{out} was measured under another protocol: not merged")
        earlier = [{"command": previous["command"], "models": sorted({c["model"] for c in previous["cells"]})}]
        runs = previous.get("runs", earlier) + runs
        cells = [c for c in previous["cells"] if c["model"] not in args.models] + cells
    result = {
        "data": name,
        "protocol": "full" if args.full else "cpu",
        **{k: v for k, v in common.items() if k not in ("data", "bits")},
        "test_bits": bits.name,
        "command": runs[0]["command"],
        "runs": runs,
        "wall_seconds": time.perf_counter() - start,
        "rows": summarize(cells),
        "cells": cells,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"written to {out}")
    return 0


def _mlp_arch() -> dict:
    from benchmarks.common import _arch

    return _arch(latent=32, encoder_hidden=[512, 512], decoder_hidden=[512, 512])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent.parent))
    sys.exit(main())
