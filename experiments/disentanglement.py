"""A disentanglement study in the manner of Locatello et al. 2019 ("Challenging Common Assumptions in
the Unsupervised Learning of Disentangled Representations"): models x regularization strengths x
seeds on the sprites grid (cvae_jax.data.sprites: dSprites' factors, the project's own pixels), each
cell a resumable run scored by every metric of cvae_jax.apps.disentanglement.

    python experiments/disentanglement.py                  # the CPU protocol (below)
    python experiments/disentanglement.py --models beta_vae --seeds 0   # a part of it
    python experiments/disentanglement.py --full           # the paper's protocol, for accelerators
    python experiments/disentanglement.py --report         # tables and plots from the cells done so far

Protocols (a protocol's settings are defaults; --steps and --seeds override them):
  cpu   5 models x 2 strengths (the ends of the middle of the paper's grid) x 3 seeds = 30 cells;
        3,072 steps of batch 64 on a seeded 196,608 of the grid's 737,280 images; metrics with a tenth
        of disentanglement_lib's sample sizes. Meant to fit a day of a 2-core CPU.
  full  the paper's: 300,000 steps of batch 64 on the whole grid, its 6 strengths per model, 50 seeds,
        disentanglement_lib's sample sizes.
Every cell trains the same model (the `sprites` preset: Locatello et al.'s 4-layer conv encoder and
its transpose, latent 10, Bernoulli pixels, Adam 1e-4) with one objective; nothing is selected: the
last step is scored, on the mean representation, as in the paper. A cell already in the results file
under the same protocol and settings is kept from there, with the commit, command and host that
scored it, so that a study spread over machines whose run folders are gone goes on where the file
stops; a cell whose run folder holds its disentanglement.json is read back, not redone; an
interrupted cell resumes from its last checkpoint, an epoch's end (a CPU-protocol cell is one epoch,
so it starts over: the cells keep checkpoint.every_steps off, as changing how steps are grouped into
compiled calls moves the numbers by rounding). A cell's `seed` is its training seed, `metric_seed`
the metrics' sampling seed (the same for every cell). The results are rewritten after every cell:
experiments/results/disentanglement.json (every cell, and per model the median and spread of each
metric), disentanglement_metrics.png (box plots per model) and disentanglement_agreement.png (the
Spearman rank correlation between metrics over all cells, the paper's Figure of metric agreement).
"""

import argparse
import json
from pathlib import Path

import _shared
import numpy as np

from cvae_jax.apps import disentanglement
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import sprites

# Model -> (the strength's config field(s), the CPU protocol's strengths, the paper's grid).
# DIP-VAE: lambda_d = 10 lambda_od (I) and = lambda_od (II), as in disentanglement_lib's study.
MODELS = {
    "beta_vae": ("train.beta", [2, 8], [1, 2, 4, 6, 8, 16]),
    "beta_tcvae": ("train.beta", [2, 8], [1, 2, 4, 6, 8, 10]),
    "factor_vae": ("train.factor_gamma", [10, 50], [10, 20, 30, 40, 50, 100]),
    "dip_vae_i": ("train.dip_lambda_od", [1, 10], [1, 2, 5, 10, 20, 50]),
    "dip_vae_ii": ("train.dip_lambda_od", [1, 10], [1, 2, 5, 10, 20, 50]),
}
OBJECTIVE = {"beta_vae": "elbo"}  # the objective's name where it is not the model's
PROTOCOLS = {
    "cpu": {"steps": 3_072, "num_train": 196_608, "seeds": [0, 1, 2], "sizes": "cpu"},
    "full": {"steps": 300_000, "num_train": 0, "seeds": list(range(50)), "sizes": "paper"},
}
BATCH = 64
GRID_IMAGES = len(sprites.rendered()) - sprites.NUM_TEST  # the grid less its test split
SCORES = [  # (metric, its headline key, the table's name)
    ("beta_vae", "eval_accuracy", "BetaVAE"),
    ("factor_vae", "eval_accuracy", "FactorVAE"),
    ("mig", "discrete_mig", "MIG"),
    ("dci", "disentanglement", "DCI Dis."),
    ("sap", "sap_score", "SAP"),
    ("modularity_explicitness", "modularity_score", "Modularity"),
]


def overrides(model: str, strength: float, steps: int, num_train: int, seed: int) -> list[str]:
    field, *_ = MODELS[model]
    images = num_train or GRID_IMAGES
    epochs = max(1, round(steps * BATCH / images))
    out = [
        f"train.objective={OBJECTIVE.get(model, model)}",
        f"{field}={strength}",
        f"train.epochs={epochs}",
        f"data.num_train={num_train}",
        "data.validation=0",  # nothing is selected: the last step is scored
        "checkpoint.every_epochs=1",
        f"seed={seed}",
    ]
    if model == "dip_vae_i":
        out.append(f"train.dip_lambda_d={10 * strength}")
    elif model == "dip_vae_ii":
        out.append(f"train.dip_lambda_d={strength}")
    return out


def cell_name(model: str, strength: float, seed: int) -> str:
    return f"{model}_{strength:g}_seed{seed}"


def run_cell(workdir: Path, model: str, strength: float, seed: int, args) -> dict:
    """One cell's scores: trained (or resumed), then scored (or its scores read back), with the
    provenance of the process that scored it."""
    scores_file = workdir / "disentanglement.json"
    if scores_file.exists():
        scores = json.loads(scores_file.read_text())
        if "provenance" not in scores:  # scored before cells kept their own: the run's last start scored it
            last_start = json.loads((workdir / "provenance.jsonl").read_text().splitlines()[-1])
            scores["provenance"] = {k: v for k, v in last_start.items() if k != "resumed_from_step"}
        return scores
    config = apply_overrides(get_config("vae", "sprites"), overrides(model, strength, args.steps, args.num_train, seed))
    run = _shared.trained(config, str(workdir))
    scores = disentanglement.evaluate_run(run.model, run.params, config, args.sizes, seed=0)
    scores.update(steps=run.step, provenance=_shared.STAMP)
    scores_file.write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def cell_record(model: str, strength: float, seed: int, scores: dict) -> dict:
    """A cell as the results file holds it. `seed` is the cell's training seed; the metrics' own
    sampling seed, which evaluate_run reports as `seed`, becomes `metric_seed`."""
    scores = dict(scores)
    if "seed" in scores:
        scores["metric_seed"] = scores.pop("seed")
    return {"model": model, "strength": strength, "seed": seed, **scores}


SETTINGS = ("steps", "num_train", "batch_size", "sizes")  # what makes two cells of one protocol comparable


def settings(args) -> dict:
    return {**PROTOCOLS[args.protocol], "steps": args.steps, "batch_size": BATCH, "seeds": args.seeds}


def recorded(args) -> dict[str, dict]:
    """The cells of the results file made under this protocol and settings, by cell name, each with
    the provenance of the run that made it (the file's, for cells that predate a cell's own)."""
    path = _shared.RESULTS / "disentanglement.json"
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    mine = settings(args)
    if saved.get("protocol") != args.protocol or any(saved["settings"].get(k) != mine[k] for k in SETTINGS):
        return {}
    kept = [{"provenance": saved.get("provenance"), **c} for c in saved["cells"]]
    if kept and "metric_seed" not in kept[0]:
        models = list(saved.get("strengths") or MODELS)  # the models of the run that wrote it, in order
        kept = with_training_seeds(kept, models, saved["settings"]["seeds"], args.protocol)
    return {cell_name(c["model"], c["strength"], c["seed"]): c for c in kept}


def with_training_seeds(saved: list[dict], models: list[str], seeds: list[int], protocol: str) -> list[dict]:
    """The cells of a file written before `metric_seed` existed, with their training seeds: such a file
    holds the metrics' seed in `seed`, and its cells in the order its run took them (seed by seed, its
    models in order), which names each cell's training seed."""
    order = [(m, strength, seed) for seed in seeds for m in models for strength in strengths(m, protocol)]
    out = []
    for i, (cell, (model, strength, seed)) in enumerate(zip(saved, order, strict=False)):
        if (cell["model"], cell["strength"]) != (model, strength):
            raise SystemExit(
                f"{_shared.RESULTS / 'disentanglement.json'}: cell {i} is {cell['model']} {cell['strength']:g}, "
                f"but the study's order has {model} {strength:g} there, so its training seed is unknown: "
                "move the file aside to start the study afresh, or restore the file the study wrote"
            )
        scores = {k: v for k, v in cell.items() if k not in ("model", "strength")}
        out.append(cell_record(model, strength, seed, scores))
    return out


def strengths(model: str, protocol: str) -> list[float]:
    _, cpu, paper = MODELS[model]
    return cpu if protocol == "cpu" else paper


def cells(args):
    """Seed by seed, so that a study cut short has every model at its first seeds."""
    for seed in args.seeds:
        for model in args.models:
            for strength in strengths(model, args.protocol):
                yield model, strength, seed


def summary(results: list[dict]) -> dict:
    """Per model: each metric's median, 25th and 75th percentiles and range over its cells."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in results):
        mine = [r for r in results if r["model"] == model]
        out[model] = {}
        for metric, key, _ in SCORES:
            values = np.array([r["metrics"][metric][key] for r in mine])
            q25, median, q75 = np.percentile(values, [25, 50, 75])
            out[model][metric] = {
                "median": float(median),
                "q25": float(q25),
                "q75": float(q75),
                "min": float(values.min()),
                "max": float(values.max()),
                "cells": len(values),
            }
    return out


def agreement(results: list[dict]) -> dict:
    """The Spearman rank correlation between every two metrics over all cells."""
    import scipy.stats

    table = np.array([[r["metrics"][m][k] for m, k, _ in SCORES] for r in results])
    rho = scipy.stats.spearmanr(table).statistic if len(results) > 2 else np.full((len(SCORES),) * 2, np.nan)
    return {"metrics": [name for *_, name in SCORES], "spearman": np.atleast_2d(rho).tolist()}


def plots(results: list[dict], agree: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in results))
    fig, axes = plt.subplots(1, len(SCORES), figsize=(3 * len(SCORES), 3.2), sharey=False)
    for ax, (metric, key, name) in zip(axes, SCORES):
        ax.boxplot([[r["metrics"][metric][key] for r in results if r["model"] == m] for m in models])
        ax.set_xticks(range(1, len(models) + 1), models, rotation=60, fontsize=7)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(_shared.picture("disentanglement_metrics"), dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    rho = np.array(agree["spearman"], dtype=float)
    image = ax.imshow(rho, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(SCORES)), agree["metrics"], rotation=60, fontsize=8)
    ax.set_yticks(range(len(SCORES)), agree["metrics"], fontsize=8)
    for (i, j), value in np.ndenumerate(rho):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image)
    fig.tight_layout()
    fig.savefig(_shared.picture("disentanglement_agreement"), dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the paper's protocol (an accelerator's days)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--steps", type=int, help="training steps of batch 64 per cell")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--workdir", default="runs/disentanglement", help="the cells' run folders: WORKDIR/<cell>")
    parser.add_argument("--report", action="store_true", help="only gather the cells done so far")
    args = parser.parse_args()
    args.protocol = "full" if args.full else "cpu"
    protocol = PROTOCOLS[args.protocol]
    args.steps = args.steps or protocol["steps"]
    args.seeds = args.seeds or protocol["seeds"]
    args.num_train, args.sizes = protocol["num_train"], protocol["sizes"]
    kept, results, saved = recorded(args), [], 0
    for model, strength, seed in cells(args):
        name = cell_name(model, strength, seed)
        workdir = Path(args.workdir) / name
        if name in kept:
            results.append(kept[name])
            continue
        if args.report and not (workdir / "disentanglement.json").exists():
            continue
        results.append(cell_record(model, strength, seed, run_cell(workdir, model, strength, seed, args)))
        print(f"{name} done", flush=True)
        save(results, args)
        saved = len(results)
    if not results:
        raise SystemExit("no cell is done yet: run the study first")
    if saved < len(results):  # kept cells after the last one run, or none run
        save(results, args)


def save(results: list[dict], args) -> None:
    """The results file and plots of the cells done so far."""
    agree = agreement(results)
    _shared.save_json(
        "disentanglement",
        {
            "protocol": args.protocol,
            "settings": settings(args),
            "strengths": {m: {"field": MODELS[m][0], "values": list(strengths(m, args.protocol))} for m in args.models},
            "cells_done": len(results),
            "cells_planned": sum(1 for _ in cells(args)),
            "summary": summary(results),
            "agreement": agree,
            "cells": results,
        },
    )
    plots(results, agree)


if __name__ == "__main__":
    main()
