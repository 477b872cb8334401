"""What the experiment scripts share: where results go, the trained-or-reused run, the judge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cvae_jax.apps import classifier
from cvae_jax.training import checkpoint
from cvae_jax.training.images import load_run, train_and_evaluate  # noqa: F401 (re-exported for the scripts)

# Where results go: experiments/results, or $CVAE_JAX_RESULTS (the tests use a temporary folder).
RESULTS = Path(os.environ.get("CVAE_JAX_RESULTS", Path(__file__).parent / "results"))


def save_json(name: str, result) -> Path:
    """Writes experiments/results/<name>.json and prints it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    text = json.dumps(result, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else float(o))
    path.write_text(text + "\n")
    print(text)
    print(f"written to {path}")
    return path


def picture(name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}.png"


def trained(config, workdir: str, dataset=None):
    """The run in `workdir`, trained first (or finished, if it was interrupted) when needed."""
    if checkpoint.has_checkpoint(workdir):
        run = load_run(workdir)
        if run.meta["position"]["epoch"] > run.config.train.epochs:  # finished
            return run
    train_and_evaluate(config, workdir, dataset=dataset, progress=False)
    return load_run(workdir)


def judge(dataset, seed: int = 0) -> classifier.Classifier:
    """The independent classifier (a CNN trained on the real training images only)."""
    return classifier.train_classifier(dataset.train.images, dataset.train.labels, dataset.num_classes, seed=seed)
