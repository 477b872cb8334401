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
