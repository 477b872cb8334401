"""Irregular heartbeats: a VAE over sliding windows of an ECG-like series (GutenTAG
ecg-diff-count-3), trained on the anomaly-free TRAIN_NA series, scores the TEST series; a point's
score is the mean score of the windows covering it; point-wise AUROC against the labelled
anomalies, beside PCA reconstruction-error baselines on the same windows. The threshold is
calibrated on the last 20% of TRAIN_NA (never trained on) for a 5% point false-positive rate.

    pip install --no-deps aeon==1.6.0     # ships the GutenTAG series (read without importing aeon)
    python experiments/anomaly_ecg.py [--data FOLDER] [--windows 40,100] [--epochs 60] [--seeds 0 1 2]

--data: a folder with ecg-diff-count-3_{TRAIN_NA,TEST}.csv[.gz] instead of the aeon wheel's copy.

Every VAE is trained once per seed (runs/anomaly_ecg/window_W/run, run_seed1, ...); the PCA baselines
are deterministic. Writes experiments/results/anomaly_ecg.json (each seed's AUROCs and their spread)
and .png (seed 0's scores).
"""

import argparse
import time
from pathlib import Path

import _shared
import numpy as np

from cvae_jax.apps import anomaly, plots
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import series

MODEL = [
    "model.encoder_hidden=256,256",
    "model.decoder_hidden=256,256",
    "model.latent_dim=16",
    "model.likelihood=gaussian",
    "model.gaussian_scale=0.05",
    "model.learn_scale=true",
    "checkpoint.every_epochs=0",
]


def pca_scores(train_windows, test_windows, k: int) -> np.ndarray:
    """Squared reconstruction error of each test window from the top-k principal components of training."""
    train, test = train_windows.reshape(len(train_windows), -1), test_windows.reshape(len(test_windows), -1)
    mean = train.mean(0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    centred = test - mean
    residual = centred - centred @ vt[:k].T @ vt[:k]
    return np.sum(residual**2, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder of the GutenTAG CSV files (default: the aeon wheel's)")
    parser.add_argument("--windows", default="40,100")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--k", type=int, default=100, help="importance samples for the NLL score")
    parser.add_argument("--fpr", type=float, default=0.05)
    parser.add_argument("--workdir", default="runs/anomaly_ecg")
    _shared.add_seed_arguments(parser)
    args = parser.parse_args()
    seeds = _shared.seeds_of(args)

    train_values, _ = series.read_csv(series.gutentag_ecg("TRAIN_NA", args.data))
    test_values, is_anomaly = series.read_csv(series.gutentag_ecg("TEST", args.data))
    split = int(0.8 * len(train_values))
    scale = series.scaler(train_values[:split])
    fit, calib, test = scale(train_values[:split]), scale(train_values[split:]), scale(test_values)
    pictures = {}

    def measure(seed: int) -> dict:
        windows = {}
        for window in map(int, args.windows.split(",")):
            start = time.perf_counter()
            fit_w, calib_w, test_w = (series.windows(v, window) for v in (fit, calib, test))
            folder = Path(args.workdir) / f"window_{window}"
            folder.mkdir(parents=True, exist_ok=True)
            npz = folder / "windows.npz"  # train: normal windows; test: held-out normal windows
            np.savez(
                npz,
                x_train=fit_w[..., 0],
                y_train=np.zeros(len(fit_w), int),
                x_test=calib_w[..., 0],
                y_test=np.zeros(len(calib_w), int),
            )
            config = apply_overrides(
                get_config("vae"),
                [
                    *MODEL,
                    f"train.epochs={args.epochs}",
                    "data.source=npz",
                    f"data.path={npz.resolve()}",
                    f"seed={seed}",
                ],
            )
            run = _shared.trained(config, _shared.seed_workdir(folder / "run", seed))
            rows = {}

            def report(name, test_scores, calib_scores):
                points = series.point_scores(test_scores, len(test), window)
                threshold = anomaly.calibrate_threshold(series.point_scores(calib_scores, len(calib), window), args.fpr)
                rows[name] = {
                    "point_auroc": anomaly.auroc(points, is_anomaly),
                    "threshold": threshold,
                    **anomaly.detection_rates(points, is_anomaly, threshold),
                }
                return points

            for kind in anomaly.SCORES:
                options = dict(kind=kind, num_classes=1, num_samples=args.k)
                points = report(
                    f"vae_{kind}",
                    anomaly.scores(run.model, run.params, test_w, **options),
                    anomaly.scores(run.model, run.params, calib_w, **options),
                )
                if kind == "nll" and seed == seeds[0]:
                    pictures[f"VAE -log p, window {window}"] = points
            variance = (
                np.linalg.svd(fit_w.reshape(len(fit_w), -1) - fit_w.mean(0).reshape(1, -1), compute_uv=False) ** 2
            )
            explained = np.cumsum(variance) / variance.sum()
            k90 = int(np.searchsorted(explained, 0.90) + 1)
            for k in sorted({3, 5, k90, int(np.searchsorted(explained, 0.99) + 1)}):
                report(
                    f"pca_k{k}" + ("_90pct_var" if k == k90 else ""),
                    pca_scores(fit_w, test_w, k),
                    pca_scores(fit_w, calib_w, k),
                )
            windows[window] = {"seconds": round(time.perf_counter() - start, 1), "scores": rows}
            print(f"window {window}: " + ", ".join(f"{n} {r['point_auroc']:.3f}" for n, r in rows.items()), flush=True)
        return {"windows": windows}

    _shared.over_seeds("anomaly_ecg", seeds, measure, epochs=args.epochs, fpr=args.fpr)
    plots.save_series_scores(
        _shared.picture("anomaly_ecg"),
        test_values,
        pictures,
        is_anomaly,
        title="ECG test series (anomalies shaded) and VAE point scores",
    )


if __name__ == "__main__":
    main()
