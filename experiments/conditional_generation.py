"""Conditional generation by label, measured: conditional accuracy (the share of class-k samples an
independent CNN, trained on the real training digits only, assigns to class k) and the conditional
log-likelihood log p(x | c) of the test digits (importance-sampled, K samples).

    python experiments/conditional_generation.py [--workdir runs/quickstart] [--k 1000]

Uses the run in --workdir (the README's quickstart CVAE), training it first if it is not there.
Writes experiments/results/conditional_generation.{json,png}.
"""

import argparse

import _shared
import jax
import numpy as np

from cvae_jax.apps import evaluate, plots
from cvae_jax.config import get_config
from cvae_jax.data import images as data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/quickstart")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--k", type=int, default=1000, help="importance samples for log p(x | c)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prefix", default="", help="put before the names of the files written (e.g. fashion_ for a Fashion-MNIST run)"
    )
    args = parser.parse_args()

    run = _shared.trained(get_config("cvae"), args.workdir)
    dataset = data.load(run.config.data)
    judge = _shared.judge(dataset, args.seed)
    judged = judge.predict(dataset.test.images) == np.asarray(dataset.test.labels)  # the judge on real test images
    key = jax.random.key(args.seed)
    accuracy, per_class = evaluate.conditional_accuracy(
        judge, run.model, run.params, key, dataset.num_classes, args.per_class
    )
    scores = evaluate.evaluate_model(run.model, run.params, run.config, dataset, num_importance_samples=args.k)
    images, _ = evaluate.conditional_samples(run.model, run.params, jax.random.fold_in(key, 1), dataset.num_classes, 10)
    plots.save_grid(
        _shared.picture(args.prefix + "conditional_generation"),
        images,
        dataset.num_classes,
        10,
        title="samples by requested class (row = class)",
        row_labels=[str(k) for k in range(10)],
    )
    _shared.save_json(
        args.prefix + "conditional_generation",
        {
            "workdir": args.workdir,
            "checkpoint_step": run.step,
            "conditional_accuracy": accuracy,
            "per_class_accuracy": np.round(per_class, 3),
            "samples_per_class": args.per_class,
            "judge_test_accuracy": float(np.mean(judged)),
            "judge_test_accuracy_by_class": np.round(
                [np.mean(judged[dataset.test.labels == k]) for k in range(dataset.num_classes)], 3
            ),
            "test_log_p_x_given_c": -scores["nll"],
            "num_importance_samples": args.k,
            "test_neg_elbo": scores["neg_elbo"],
            "bits_per_dim": scores["bits_per_dim"],
            "active_units": scores["active_units"],
            "latent_dim": scores["latent_dim"],
        },
    )


if __name__ == "__main__":
    main()
