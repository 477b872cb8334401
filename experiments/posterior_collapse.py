"""Posterior collapse and its cures: the quickstart CVAE (latent 16) trained with β, KL warm-up,
cyclical annealing and free bits, each against active units (Burda et al. 2015), KL, mutual
information I(x; z), test -ELBO (β = 1), test NLL -log p(x | c) (importance-sampled) and
conditional accuracy (an independent CNN judges class-k samples).

    python experiments/posterior_collapse.py [--epochs 50] [--k 200] [--seeds 0 1 2]

Every setting is trained once per seed; the judge once (seed 0). Writes
experiments/results/posterior_collapse.json (each seed's rows and their spread) and .png (the
picture: seed 0's test KL per latent dimension).
"""

import argparse
import time

import _shared
import jax
import numpy as np

from cvae_jax.apps import evaluate, plots
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import images as data

SETTINGS = {
    "β=1": [],
    "β=1, linear warm-up (10 epochs)": ["train.kl_schedule=linear", "train.warmup_steps=310"],
    "β=1, cyclical (4 cycles)": ["train.kl_schedule=cyclical", "train.num_cycles=4"],
    "β=1, free bits 0.5": ["train.free_bits=0.5"],
    "β=4": ["train.beta=4"],
    "β=4, linear warm-up (10 epochs)": ["train.beta=4", "train.kl_schedule=linear", "train.warmup_steps=310"],
    "β=4, cyclical (4 cycles)": ["train.beta=4", "train.kl_schedule=cyclical", "train.num_cycles=4"],
    "β=4, free bits 0.5": ["train.beta=4", "train.free_bits=0.5"],
    "β=16": ["train.beta=16"],
    "β=16, free bits 0.5": ["train.beta=16", "train.free_bits=0.5"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--k", type=int, default=200, help="importance samples for the test NLL")
    _shared.add_seed_arguments(parser)
    args = parser.parse_args()
    seeds = _shared.seeds_of(args)

    dataset = data.load_npz(data.embedded_path())
    judge = _shared.judge(dataset, 0)

    def measure(seed: int) -> dict:
        rows = []
        for name, overrides in SETTINGS.items():
            config = apply_overrides(get_config("cvae"), [f"train.epochs={args.epochs}", f"seed={seed}", *overrides])
            start = time.perf_counter()
            run = _shared.train_and_evaluate(config, None, dataset=dataset, progress=False)
            scores = evaluate.evaluate_model(
                run.model, run.state.params, config, dataset, num_importance_samples=args.k
            )
            accuracy, _ = evaluate.conditional_accuracy(
                judge, run.model, run.state.params, jax.random.key(seed), dataset.num_classes
            )
            row = {
                "setting": name,
                "overrides": overrides,
                "active_units": scores["active_units"],
                "latent_dim": scores["latent_dim"],
                "kl": scores["kl"],
                "mutual_information": scores["mutual_information"],
                "test_neg_elbo": scores["neg_elbo"],
                "test_nll": scores["nll"],
                "conditional_accuracy": accuracy,
                "kl_per_dim": scores.get("kl_per_dim"),
                "seconds": round(time.perf_counter() - start, 1),
            }
            rows.append(row)
            print(
                f"| {name} | {row['active_units']}/{row['latent_dim']} | {row['kl']:.2f} "
                f"| {row['mutual_information']:.2f} | {row['test_neg_elbo']:.2f} | {row['test_nll']:.2f} "
                f"| {accuracy:.3f} |",
                flush=True,
            )
        if seed == seeds[0]:
            picture(rows)
        return {"rows": rows}

    _shared.over_seeds("posterior_collapse", seeds, measure, epochs=args.epochs, num_importance_samples=args.k)


def picture(rows) -> None:
    """KL per latent dimension (sorted, largest first) for each setting: collapsed units are dark."""
    kl = np.array([sorted(r["kl_per_dim"], reverse=True) for r in rows])
    plots.save_heatmap(
        _shared.picture("posterior_collapse"),
        kl,
        [r["setting"] for r in rows],
        "latent dimension (sorted by KL)",
        "test KL per latent dimension",
        colorbar="nats",
    )


if __name__ == "__main__":
    main()
