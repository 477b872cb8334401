"""The pictures a run writes: reconstructions, samples, the class grid and, for a 2-D latent, the
latent scatter and the decoded manifold."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from cvae_jax.apps import inference, plots
from cvae_jax.config import Config
from cvae_jax.core.models import VAE
from cvae_jax.data import images as data_lib
from cvae_jax.training import tensorboard
from cvae_jax.training.step import SAMPLE, purpose_key


def _last_step(workdir: Path) -> int:
    """The step of the run's last metrics.jsonl line (0 when there is none)."""
    path = workdir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return int(json.loads(lines[-1]).get("step", 0)) if lines else 0


def shown_examples(labels: np.ndarray, count: int = 10) -> np.ndarray:
    """Indices of `count` test examples to show: the first of each class in class order, then the
    earliest others (a test split sorted by class would otherwise show one class only)."""
    labels = np.asarray(labels)
    firsts = [int(np.argmax(labels == c)) for c in np.unique(labels)][:count]
    taken = set(firsts)
    rest = [i for i in range(min(len(labels), 2 * count)) if i not in taken][: count - len(firsts)]
    return np.asarray(firsts + rest, dtype=np.int64)


def write_pictures(workdir: Path, model: VAE, params, config: Config, dataset: data_lib.Dataset) -> list[Path]:
    """Reconstructions, samples, the class grid (CVAE) and, for a 2-D latent, scatter and manifold."""
    key = purpose_key(config.seed, SAMPLE)
    num_classes, latent_dim = dataset.num_classes, config.model.latent_dim
    test = dataset.test
    cond = (lambda labels: inference.one_hot(labels, num_classes)) if model.conditional else (lambda labels: None)
    written = []

    def out(name: str) -> Path:
        written.append(workdir / name)
        return workdir / name

    shown = shown_examples(test.labels)
    images = test.images[shown]
    recon = np.asarray(inference.reconstruct(model, params, images, cond(test.labels[shown])))
    plots.save_grid(
        out("reconstructions.png"),
        np.concatenate([images, recon]),
        2,
        10,
        "test images (top) and reconstructions (bottom)",
    )

    labels = np.arange(64) % num_classes
    samples = np.asarray(inference.sample(model, params, key, 64, cond(labels)))
    plots.save_grid(
        out("samples.png"),
        samples,
        8,
        8,
        "random samples" + (" (label = index mod classes)" if model.conditional else ""),
    )
    if config.train.tensorboard:
        grids = {"samples": plots.tile(samples, 8, 8)}
        grids["reconstructions"] = plots.tile(np.concatenate([images, recon]), 2, 10)
        tensorboard.write_images(workdir, _last_step(workdir), grids)

    if model.conditional:
        # The same key for every class: for an unconditional prior each column shares its z (the "style").
        grid = [
            inference.sample(model, params, jax.random.fold_in(key, 1), 10, cond(np.full(10, c)))
            for c in range(num_classes)
        ]
        plots.save_grid(
            out("class_grid.png"),
            np.concatenate(grid),
            num_classes,
            10,
            "one row per class; each column shares z",
            [str(c) for c in range(num_classes)],
        )

    if latent_dim == 2:
        mean, _ = inference.encode(model, params, test.images, cond(test.labels))
        plots.save_latent_scatter(
            out("latent_scatter.png"), np.asarray(mean), test.labels, "posterior means of the test set"
        )
        z = plots.manifold_grid(12)
        if model.conditional:
            rows = [
                inference.decode_mean(model, params, z[i * 12 : (i + 1) * 12], cond(np.full(12, c)))
                for c in range(num_classes)
                for i in range(0, 12, 3)
            ]
            plots.save_grid(
                out("manifold.png"),
                np.concatenate(rows),
                num_classes * 4,
                12,
                "decoded latent grid per class (every 3rd row of a 12x12 grid)",
            )
        else:
            plots.save_grid(
                out("manifold.png"),
                np.asarray(inference.decode_mean(model, params, z)),
                12,
                12,
                "decoded latent grid, z in [-2, 2]^2",
            )
    return written
