"""Training on the real embedded digits works: the test ELBO falls far below its start, and CVAE
samples are recognised as their requested class by an independent classifier trained on real digits."""

import json
import subprocess
import sys

import jax
import pytest

from cvae_jax.apps import classifier, evaluate
from cvae_jax.tasks.images import load_run

pytestmark = pytest.mark.slow  # a 60-epoch training


@pytest.fixture(scope="module")
def trained_cvae(tmp_path_factory, full_opt_env):
    """60 epochs of the default CVAE (latent 8) on the embedded digits, by the command line in a
    process of its own, compiled at XLA's default level: it runs its programs for ~40 s."""
    workdir = tmp_path_factory.mktemp("cvae") / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvae_jax",
            "train",
            "--workdir",
            str(workdir),
            "--epochs",
            "60",
            "--set",
            "model.latent_dim=8",
            "--no-progress",
        ],
        env=full_opt_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return load_run(workdir), history


def test_test_elbo_falls_far_below_its_start(trained_cvae):
    _, history = trained_cvae
    tests = [e for e in history if e["split"] == "test"]
    start, end = tests[0]["neg_elbo"], tests[-1]["neg_elbo"]
    # An untrained decoder gives ~784 * log 2 = 543 nats; a trained one well under 150.
    assert start > 500
    assert end < 0.3 * start and end < 150


def test_cvae_samples_are_their_requested_class(trained_cvae, digits):
    clf = classifier.train_classifier(digits.train.images, digits.train.labels, digits.num_classes)
    assert clf.accuracy(digits.test.images, digits.test.labels) > 0.9  # the judge itself is competent
    run, _ = trained_cvae
    accuracy, per_class = evaluate.conditional_accuracy(
        clf, run.model, run.params, jax.random.key(123), 10, per_class=100
    )
    assert accuracy > 0.75, per_class  # chance is 0.1
    assert per_class.min() > 0.4, per_class
