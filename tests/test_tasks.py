"""A task written outside the library (experiments/custom_task_points.py, the docs/tasks.md example)
trains on the one trainer and gets what image runs get: metrics.jsonl with its own epoch-end
metric, checkpoints, exact resume and the refusal of another config."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from cvae_jax.config import TrainConfig
from cvae_jax.training.checkpoint import CheckpointError
from cvae_jax.training.trainer import fit

_SPEC = importlib.util.spec_from_file_location(
    "custom_task_points", Path(__file__).resolve().parents[1] / "experiments" / "custom_task_points.py"
)
points = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(points)


def _config(epochs: int, **fields):
    return points.RingConfig(
        num_points=1024, train=TrainConfig(epochs=epochs, batch_size=64, learning_rate=3e-3), **fields
    )


@pytest.mark.slow
def test_a_custom_task_trains_logs_and_resumes_exactly(tmp_path):
    straight = fit(points.RingTask(_config(4)), tmp_path / "straight", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    tests = [e for e in lines if e["split"] == "test"]
    assert [e["epoch"] for e in tests] == [0, 1, 2, 3, 4]
    assert [e["epoch"] for e in lines if e["split"] == "train"] == [1, 2, 3, 4]
    assert all(math.isfinite(e["ring_distance"]) for e in tests)  # the task's own epoch-end metric
    assert tests[-1]["neg_elbo"] < tests[0]["neg_elbo"] - 0.3  # it learned
    # Two epochs, then the same run trained on to four: the same numbers as four straight.
    fit(points.RingTask(_config(2)), tmp_path / "resumed", progress=False)
    resumed = fit(points.RingTask(_config(4)), tmp_path / "resumed", progress=False)
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(a, b)
    drop = ("seconds", "samples_per_s", "save_s")
    same = [
        [{k: v for k, v in e.items() if k not in drop} for e in h if e["split"] != "checkpoint"]
        for h in (straight.history, resumed.history)
    ]
    assert same[0] == same[1]
    with pytest.raises(CheckpointError, match="hidden: 64 -> 32"):
        fit(points.RingTask(dataclasses.replace(_config(5), hidden=32)), tmp_path / "resumed", progress=False)


class TwoLossTask(points.RingTask):
    """The ring task whose terms are named loss_a and loss_b (no neg_elbo, recon or kl), selecting
    "best" and stopping early on validation loss_a."""

    name = "ring_two_losses"
    selection_metric = "loss_a"

    def __init__(self, config):
        super().__init__(config)
        self.validation_rows = {"x": points.ring(512, config.seed + 200)}

    def build(self, total_steps):
        import jax.numpy as jnp

        parts = super().build(total_steps)

        def terms(params, batch, key):
            t = parts.terms(params, batch, key)
            return {"loss_a": t["neg_elbo"], "loss_b": t["kl"]}

        def loss(params, batch, key, step=0):
            t = terms(params, batch, key)
            value = jnp.mean(t["loss_a"])
            return value, {"loss": value, "loss_a": value, "loss_b": jnp.mean(t["loss_b"])}

        return dataclasses.replace(parts, terms=terms, loss=loss)


def _two_loss_config(epochs, patience=0, learning_rate=3e-3):
    train = TrainConfig(epochs=epochs, batch_size=64, learning_rate=learning_rate, early_stopping_patience=patience)
    return points.RingConfig(num_points=1024, train=train, checkpoint=points.CheckpointConfig(every_epochs=1, keep=1))


@pytest.mark.slow
def test_a_task_with_its_own_term_names_selects_stops_and_resumes_on_its_metric(tmp_path):
    from cvae_jax.training.checkpoint import Checkpoints

    straight = fit(TwoLossTask(_two_loss_config(6)), tmp_path / "straight", progress=False)
    held = [e for e in straight.history if e["split"] == "validation" and e["epoch"] > 0]
    assert {"loss_a", "loss_b"} <= set(held[0]) and "neg_elbo" not in held[0]
    with Checkpoints(tmp_path / "straight", read_only=True) as ckpts:  # keep=1: the latest, and the best
        assert ckpts.best_step() == min(held, key=lambda e: e["loss_a"])["step"]
    # resumed after 3 epochs: bit-identical to the straight run
    fit(TwoLossTask(_two_loss_config(3)), tmp_path / "resumed", progress=False)
    resumed = fit(TwoLossTask(_two_loss_config(6)), tmp_path / "resumed", progress=False)
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(a, b)
    # early stopping on loss_a: a learning rate too high to improve after the first epochs stops the
    # run `patience` epochs after its best validation loss_a, not at train.epochs
    stopped = fit(TwoLossTask(_two_loss_config(30, patience=2, learning_rate=0.03)), tmp_path / "stop", progress=False)
    scores = [e["loss_a"] for e in stopped.history if e["split"] == "validation" and e["epoch"] > 0]
    assert len(scores) < 30 and len(scores) == int(np.argmin(scores)) + 1 + 2
    with pytest.raises(Exception, match="selection_metric 'neg_elbo' is not one of its terms"):

        class Unnamed(TwoLossTask):
            selection_metric = "neg_elbo"

        fit(Unnamed(_two_loss_config(1)), tmp_path / "unnamed", progress=False)


@pytest.mark.slow
def test_cvae_jax_train_trains_a_task_named_by_its_file_and_class(tmp_path, capsys):
    from cvae_jax import cli

    task = f"{Path(points.__file__)}:RingTask"
    settings = ["num_points=1024", "train.epochs=2", "train.batch_size=64", "train.learning_rate=0.003"]
    argv = ["train", "--task", task, "--workdir", str(tmp_path / "cli"), "--no-progress"]
    assert cli.main(argv + [a for s in settings for a in ("--set", s)]) == 0
    direct = fit(points.RingTask(_config(2)), tmp_path / "direct", progress=False)
    drop = ("seconds", "samples_per_s", "save_s")

    def lines(workdir):
        entries = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in e.items() if k not in drop} for e in entries if e["split"] != "checkpoint"]

    assert lines(tmp_path / "cli") == lines(tmp_path / "direct") and direct.history
    assert json.loads((tmp_path / "cli" / "config.json").read_text()) == json.loads(json.dumps(_config(2).to_dict()))
    capsys.readouterr()
    assert cli.main(["train", "--task", f"{Path(points.__file__)}:Nope", "--workdir", str(tmp_path / "x")]) == 2
    assert "no Task subclass named 'Nope'" in capsys.readouterr().err
    assert cli.main(["train", "--task", "spectra", "--workdir", str(tmp_path / "x")]) == 2
    assert "is not a task" in capsys.readouterr().err


def _series_csv(path, values):
    rows = "\n".join(f"{i},{v:.6f},0" for i, v in enumerate(values))
    path.write_text("timestamp,value,is_anomaly\n" + rows + "\n")
    return str(path)


@pytest.mark.slow
def test_train_task_series_trains_on_windows_and_round_trips_through_export(tmp_path):
    from cvae_jax import cli
    from cvae_jax.apps import pretrained

    t = np.arange(1200)
    train = _series_csv(tmp_path / "train.csv", np.sin(t / 7.0))
    test = _series_csv(tmp_path / "test.csv", np.sin(t[:300] / 7.0 + 0.3))
    argv = ["train", "--task", "series", "--workdir", str(tmp_path / "run"), "--epochs", "2", "--no-progress"]
    argv += ["--set", f"data.path={train}", "--set", f"data.test_path={test}", "--set", "data.window=20"]
    assert cli.main(argv) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["source"] == "series" and config["model"]["likelihood"] == "gaussian"
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    tests = [e for e in lines if e["split"] == "test"]
    assert tests[-1]["neg_elbo"] < tests[0]["neg_elbo"]  # it learned the windows
    out = pretrained.export(tmp_path / "run", tmp_path / "series-model")
    loaded = pretrained.from_pretrained(out)
    assert loaded.meta["image_shape"] == [20, 1, 1]
    from cvae_jax.tasks.images import load_run

    for a, b in zip(jax.tree.leaves(load_run(tmp_path / "run", "best").params), jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(a, b)
    assert cli.main([*argv[:3], "--workdir", str(tmp_path / "x"), "--set", "data.source=embedded"]) == 2
