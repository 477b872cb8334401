"""Conditional accuracy of a trained CVAE run: the share of class-k samples that an independent
classifier (a small CNN trained on the real training digits only) assigns to class k.

    python experiments/conditional_accuracy.py --workdir runs/quickstart [--per-class 100]

Prints and writes <workdir>/conditional_accuracy.json.
"""

import argparse
import json
from pathlib import Path

import jax

from cvae_jax import classifier, data, evaluate
from cvae_jax.run import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model, params, config = load(args.workdir)
    dataset = data.load(config.data)
    clf = classifier.train_classifier(dataset.train.images, dataset.train.labels, dataset.num_classes, seed=args.seed)
    accuracy, per_class = evaluate.conditional_accuracy(clf, model, params, jax.random.key(args.seed),
                                                        dataset.num_classes, args.per_class)
    lines = (Path(args.workdir) / "metrics.jsonl").read_text().splitlines()
    final = [e for e in map(json.loads, lines) if e["split"] == "test"][-1]
    result = {"conditional_accuracy": accuracy, "per_class": per_class.round(3).tolist(),
              "classifier_test_accuracy": clf.accuracy(dataset.test.images, dataset.test.labels),
              "test_neg_elbo": final["neg_elbo"], "per_class_samples": args.per_class}
    print(json.dumps(result, indent=2))
    (Path(args.workdir) / "conditional_accuracy.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
