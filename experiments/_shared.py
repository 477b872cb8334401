"""What the experiment scripts share: where results go, the trained-or-reused run, the judge."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cvae_jax import provenance
from cvae_jax.apps import classifier
from cvae_jax.tasks.images import load_run, train_and_evaluate  # noqa: F401 (re-exported for the scripts)

# Where results go: experiments/results, or $CVAE_JAX_RESULTS (the tests use a temporary folder).
RESULTS = Path(os.environ.get("CVAE_JAX_RESULTS", Path(__file__).parent / "results"))
# The commit, command and host of this process, taken when it starts (the code it runs).
STAMP = provenance.stamp()


def save_json(name: str, result) -> Path:
    """Writes experiments/results/<name>.json, stamped with its provenance, and prints it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {**result, "provenance": STAMP}  # the commit, command and host behind it
    text = json.dumps(result, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else float(o))
    text = provenance.portable(text)  # no absolute path of this machine
    path.write_text(text + "\n")
    print(text)
    print(f"written to {path}")
    return path


def picture(name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}.png"


def trained(config, workdir: str, dataset=None):
    """The run in `workdir` for `config`: trained, resumed or found finished by the trainer, which
    refuses a saved run of another config (so an earlier 10-epoch run is trained on to `config`'s
    epochs, never reported as the longer one)."""
    train_and_evaluate(config, workdir, dataset=dataset, progress=False)
    return load_run(workdir)


def judge(dataset, seed: int = 0) -> classifier.Classifier:
    """The independent classifier (a CNN trained on the real training images only)."""
    return classifier.train_classifier(dataset.train.images, dataset.train.labels, dataset.num_classes, seed=seed)


# ----------------------------------------------------------------------------- seeds and their spread


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    """--seeds (default 0 1 2: every headline number is a mean over them, with its spread) and --seed
    (one seed only, as before)."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--seed", type=int, help="one seed only (the same as --seeds SEED)")


def seeds_of(args: argparse.Namespace) -> list[int]:
    return [args.seed] if args.seed is not None else list(dict.fromkeys(args.seeds))


def seed_workdir(workdir: str | Path, seed: int) -> str:
    """The run folder of `seed`: `workdir` itself for seed 0 (the folder the README names), else
    `workdir`_seed<seed>."""
    return str(workdir) if seed == 0 else f"{workdir}_seed{seed}"


def spread(runs: list):
    """The runs' results (equal-shaped trees of dicts, lists and numbers) merged into one tree whose
    numbers are {"mean", "std", "min", "max"} over the runs (std: the sample standard deviation; 0 for
    one run). Strings and booleans that agree are kept; entries that differ in shape are dropped."""
    first = runs[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(r, dict) and k in r for r in runs)]
        merged = {k: spread([r[k] for r in runs]) for k in keys}
        return {k: v for k, v in merged.items() if v is not None}
    if isinstance(first, list):
        if not all(isinstance(r, list) and len(r) == len(first) for r in runs):
            return None
        return [spread([r[i] for r in runs]) for i in range(len(first))]
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in runs):
            return None
        values = [float(r) for r in runs]
        return {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return first if all(r == first for r in runs) else None


def over_seeds(name: str, seeds: list[int], measure: Callable[[int], dict], **settings) -> dict:
    """Runs measure(seed) for every seed and writes experiments/results/<name>.json: the settings, the
    seeds, each seed's result and their spread (what the tables report, as mean ± std)."""
    by_seed = {}
    for seed in seeds:
        by_seed[str(seed)] = measure(seed)
        print(f"seed {seed} done", flush=True)
    result = {**settings, "seeds": seeds, "spread": spread(list(by_seed.values())), "by_seed": by_seed}
    save_json(name, result)
    return result


def merge_seeds(name: str, seeds: list[int]) -> dict:
    """Writes experiments/results/<name>.json from the one-seed results <name>_seed<S>.json that runs
    of the same command with `--seed S --name <name>_seed<S>` wrote (seeds run in parallel processes):
    their settings must agree; each seed's numbers, their spread, and every part's provenance. The
    first seed's sample files (<name>_seed<S>_*.smi) are copied to the names one run gives them."""
    parts = [json.loads((RESULTS / f"{name}_seed{seed}.json").read_text()) for seed in seeds]
    fixed = [{k: v for k, v in p.items() if k not in ("seeds", "spread", "by_seed", "provenance")} for p in parts]
    if any(f != fixed[0] for f in fixed[1:]):
        raise SystemExit(f"the one-seed results of {name} were made with other settings: not merged")
    by_seed = {str(seed): part["by_seed"][str(seed)] for seed, part in zip(seeds, parts)}
    result = {**fixed[0], "seeds": seeds, "spread": spread(list(by_seed.values())), "by_seed": by_seed}
    result["parts"] = {str(seed): part.get("provenance") for seed, part in zip(seeds, parts)}
    for kept in RESULTS.glob(f"{name}_seed{seeds[0]}_*.smi"):  # the first seed's files, as one run names them
        (RESULTS / kept.name.replace(f"_seed{seeds[0]}_", "_", 1)).write_bytes(kept.read_bytes())
    save_json(name, result)
    return result
