"""Priors and objectives compared on the embedded digits, same architecture and budget for each:
test negative ELBO and importance-sampled NLL (K samples) for standard-normal, mixture, VampPrior and
flow priors, and for VAE (ELBO) vs IWAE training.

    python experiments/priors_table.py [--epochs 50] [--k 1000] [--seeds 0 1 2]

Every row is trained once per seed. Writes experiments/results/priors.json (each seed's rows and
their spread); docs/priors.md reports the mean ± std.
"""

import argparse
import time

import _shared

from cvae_jax.apps import evaluate
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import images as data
from cvae_jax.tasks.images import train_and_evaluate

RUNS = {
    "standard_normal": [],
    "mixture (10)": ["model.prior=mixture", "model.prior_components=10"],
    "vamp (50)": ["model.prior=vamp", "model.prior_components=50"],
    "flow (RealNVP x4)": ["model.prior=flow", "model.flow_layers=4"],
    "IWAE training, K=5": ["train.objective=iwae", "train.iwae_samples=5"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--k", type=int, default=1000)
    _shared.add_seed_arguments(parser)
    args = parser.parse_args()
    dataset = data.load_npz(data.embedded_path())

    def measure(seed: int) -> dict:
        rows = []
        for name, overrides in RUNS.items():
            cfg = apply_overrides(get_config("vae"), [f"train.epochs={args.epochs}", f"seed={seed}", *overrides])
            start = time.perf_counter()
            run = train_and_evaluate(cfg, None, dataset=dataset, progress=False)
            train_s = time.perf_counter() - start
            result = evaluate.evaluate_model(
                run.model, run.state.params, cfg, dataset, num_importance_samples=args.k, seed=seed
            )
            row = {"run": name, "overrides": overrides, "train_seconds": round(train_s, 1), **result}
            row.pop("kl_per_dim", None)
            rows.append(row)
            print(
                f"| {name} | {row['neg_elbo']:.2f} | {row['nll']:.2f} | {row['kl']:.2f} | {row['active_units']}/"
                f"{row['latent_dim']} | {row['mutual_information']:.2f} | {train_s:.0f} s "
                f"| {row['nll_seconds']:.1f} s |",
                flush=True,
            )
        return {"rows": rows}

    _shared.over_seeds("priors", _shared.seeds_of(args), measure, epochs=args.epochs, num_importance_samples=args.k)


if __name__ == "__main__":
    main()
