"""Conditional generation by label, measured: conditional accuracy (the share of class-k samples an
independent CNN, trained on the real training digits only, assigns to class k) and the conditional
log-likelihood log p(x | c) of the test digits (importance-sampled, K samples).

    python experiments/conditional_generation.py [--workdir runs/quickstart] [--k 1000] [--seeds 0 1 2]

Uses the run in --workdir (the README's quickstart CVAE) for seed 0 and --workdir_seed<S> for seed S
(the same config with seed S), training each first if it is not there. The judge is trained once
(seed 0), so the spread over seeds is the model's. Writes experiments/results/conditional_generation.json
(each seed's numbers and their mean, std, min and max) and .png (seed 0's samples).
"""

import argparse
import dataclasses

import _shared
import jax
import numpy as np

from cvae_jax.apps import evaluate, plots
from cvae_jax.config import get_config
from cvae_jax.data import images as data
from cvae_jax.training import checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/quickstart")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--k", type=int, default=1000, help="importance samples for log p(x | c)")
    _shared.add_seed_arguments(parser)
    parser.add_argument(
        "--prefix", default="", help="put before the names of the files written (e.g. fashion_ for a Fashion-MNIST run)"
    )
    args = parser.parse_args()

    seeds = _shared.seeds_of(args)
    base = _shared.load_run(args.workdir).config if checkpoint.has_checkpoint(args.workdir) else get_config("cvae")
    dataset = data.load(base.data)
    judge = _shared.judge(dataset, 0)
    judged = judge.predict(dataset.test.images) == np.asarray(dataset.test.labels)  # the judge on real test images

    def measure(seed: int) -> dict:
        workdir = _shared.seed_workdir(args.workdir, seed)
        run = _shared.trained(dataclasses.replace(base, seed=seed), workdir)
        key = jax.random.key(seed)
        accuracy, per_class = evaluate.conditional_accuracy(
            judge, run.model, run.params, key, dataset.num_classes, args.per_class
        )
        scores = evaluate.evaluate_model(
            run.model, run.params, run.config, dataset, num_importance_samples=args.k, seed=seed
        )
        if seed == seeds[0]:
            images, _ = evaluate.conditional_samples(
                run.model, run.params, jax.random.fold_in(key, 1), dataset.num_classes, 10
            )
            plots.save_grid(
                _shared.picture(args.prefix + "conditional_generation"),
                images,
                dataset.num_classes,
                10,
                title="samples by requested class (row = class)",
                row_labels=[str(k) for k in range(10)],
            )
        return {
            "workdir": workdir,
            "checkpoint_step": run.step,
            "conditional_accuracy": accuracy,
            "per_class_accuracy": np.round(per_class, 3).tolist(),
            "test_log_p_x_given_c": -scores["nll"],
            "test_neg_elbo": scores["neg_elbo"],
            "bits_per_dim": scores["bits_per_dim"],
            "active_units": scores["active_units"],
            "latent_dim": scores["latent_dim"],
        }

    _shared.over_seeds(
        args.prefix + "conditional_generation",
        seeds,
        measure,
        samples_per_class=args.per_class,
        num_importance_samples=args.k,
        judge_test_accuracy=float(np.mean(judged)),
        judge_test_accuracy_by_class=np.round(
            [np.mean(judged[dataset.test.labels == k]) for k in range(dataset.num_classes)], 3
        ).tolist(),
    )


if __name__ == "__main__":
    main()
