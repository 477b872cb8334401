"""Anomaly detection on digits, one class held out: a VAE trained on the other nine classes scores
all 1,000 test digits; the held-out class is the anomaly. AUROC per held-out class for each score
(importance-sampled NLL, negative ELBO, reconstruction error), and precision/recall at a threshold
calibrated on held-out normal digits (10% of the nine classes' training digits, never trained on)
for a 5% false-positive rate.

    python experiments/anomaly_digits.py [--epochs 40] [--k 100] [--classes 0,1,...,9] [--seeds 0 1 2]

Each held-out class is a real run: its nine-class data go to an .npz the config points at, so
`cvae-jax score --workdir runs/anomaly_digits/holdout_K/run ...` works on it too (seed S > 0:
run_seed<S>). The data splits are fixed; the seed is the model's. Writes
experiments/results/anomaly_digits.json (each seed's AUROCs and their spread) and .png (the picture:
mean AUROC over seeds per held-out class).
"""

import argparse
import time
from pathlib import Path

import _shared
import numpy as np

from cvae_jax.apps import anomaly, plots
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import images as data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--k", type=int, default=100, help="importance samples for the NLL score")
    parser.add_argument("--fpr", type=float, default=0.05)
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--workdir", default="runs/anomaly_digits")
    _shared.add_seed_arguments(parser)
    args = parser.parse_args()

    digits = data.load_npz(data.embedded_path())

    def measure(seed: int) -> dict:
        rows = []
        for held_out in map(int, args.classes.split(",")):
            start = time.perf_counter()
            normal = np.flatnonzero(digits.train.labels != held_out)
            calib = normal[np.random.default_rng(held_out).random(len(normal)) < 0.1]
            train = np.setdiff1d(normal, calib)
            folder = Path(args.workdir) / f"holdout_{held_out}"
            folder.mkdir(parents=True, exist_ok=True)
            npz = folder / "nine_classes.npz"  # train: nine classes; test: held-out normal digits (calibration)
            np.savez(
                npz,
                x_train=digits.train.images[train],
                y_train=digits.train.labels[train],
                x_test=digits.train.images[calib],
                y_test=digits.train.labels[calib],
            )
            config = apply_overrides(
                get_config("vae"),
                [
                    f"train.epochs={args.epochs}",
                    "data.source=npz",
                    f"data.path={npz.resolve()}",
                    "checkpoint.every_epochs=0",
                    f"seed={seed}",
                ],
            )
            run = _shared.trained(config, _shared.seed_workdir(folder / "run", seed))
            is_anomaly = digits.test.labels == held_out
            row = {"held_out": held_out, "train_examples": len(train), "calibration_examples": len(calib)}
            for kind in anomaly.SCORES:
                options = dict(kind=kind, num_classes=10, num_samples=args.k)
                test_scores = anomaly.scores(run.model, run.params, digits.test.images, **options)
                threshold = anomaly.calibrate_threshold(
                    anomaly.scores(run.model, run.params, digits.train.images[calib], **options), args.fpr
                )
                rates = anomaly.detection_rates(test_scores, is_anomaly, threshold)
                row[kind] = {"auroc": anomaly.auroc(test_scores, is_anomaly), "threshold": threshold, **rates}
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(
                f"held out {held_out}: "
                + ", ".join(f"{k} AUROC {row[k]['auroc']:.3f}" for k in anomaly.SCORES)
                + f" ({row['seconds']} s)",
                flush=True,
            )
        mean = {k: float(np.mean([r[k]["auroc"] for r in rows])) for k in anomaly.SCORES}
        return {"mean_auroc": mean, "per_class": rows}

    result = _shared.over_seeds(
        "anomaly_digits",
        _shared.seeds_of(args),
        measure,
        epochs=args.epochs,
        num_importance_samples=args.k,
        fpr=args.fpr,
    )
    picture(result["spread"]["per_class"])


def picture(rows) -> None:
    """Mean AUROC over seeds per held-out class (rows: the spread of the per-class results)."""
    plots.save_bars(
        _shared.picture("anomaly_digits"),
        [str(int(r["held_out"]["mean"])) for r in rows],
        {kind: np.array([r[kind]["auroc"]["mean"] for r in rows]) for kind in anomaly.SCORES},
        "AUROC",
        "held-out digit class as the anomaly (0.5 = chance)",
        reference=0.5,
    )


if __name__ == "__main__":
    main()
