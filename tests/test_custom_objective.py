"""A user-defined objective in its own file (experiments/custom_objective.py, the docs/objectives.md
example) is picked by name: it trains through train_and_evaluate and `cvae-jax train --plugin`, its loss
is its paper's definition, it evaluates and resumes bit-identically; an unknown name is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax import cli, plugins
from cvae_jax.config import ConfigError, apply_overrides, get_config
from cvae_jax.core import objectives
from cvae_jax.tasks.images import build, init_for, train_and_evaluate

EXAMPLE = str(Path(__file__).resolve().parents[1] / "experiments" / "custom_objective.py")
SMALL = [
    "model.latent_dim=4",
    "model.encoder_hidden=64",
    "model.decoder_hidden=64",
    "train.batch_size=50",
    "data.validation=0",
    "checkpoint.every_epochs=1",
    "train.objective=capacity",
    "train.beta=5",
    "train.warmup_steps=100",
]


def _cfg(*extra):
    plugins.load([EXAMPLE])
    return apply_overrides(get_config("vae"), SMALL + list(extra))


def test_the_capacity_loss_is_burgess_et_al_definition(small_digits):
    cfg = _cfg()
    parts = build(cfg, small_digits.image_shape, small_digits.num_classes, total_steps=1000)
    params = init_for(parts, cfg, small_digits.image_shape, small_digits.num_classes).params
    batch = {"image": jnp.asarray(small_digits.train.images[:32]), "label": jnp.asarray(small_digits.train.labels[:32])}
    key = jax.random.key(3)
    terms = parts.terms(params, batch, key)
    for step, c in ((0, 0.0), (50, 12.5), (100, 25.0), (500, 25.0)):  # C ramps 0 -> 25 nats over 100 steps
        value, metrics = parts.loss(params, batch, key, step)
        expected = jnp.mean(terms["recon"]) + 5.0 * jnp.abs(jnp.mean(terms["kl"]) - c)
        np.testing.assert_allclose(value, expected, rtol=1e-6)
        assert float(metrics["capacity"]) == pytest.approx(c)
    assert set(terms) >= {"recon", "kl", "neg_elbo"}  # evaluation reports the ELBO terms


@pytest.mark.slow
def test_a_registered_objective_trains_from_python_and_the_cli_and_resumes(small_digits, tmp_path, capsys):
    straight = train_and_evaluate(_cfg("train.epochs=2"), tmp_path / "py", dataset=small_digits, progress=False)
    tests = [e for e in straight.history if e["split"] == "test"]
    assert tests[-1]["neg_elbo"] < tests[0]["neg_elbo"]  # it learned
    trained = [e for e in straight.history if e["split"] == "train"]
    assert trained[-1]["capacity"] > trained[0]["capacity"] > 0  # the schedule the loss followed
    train_and_evaluate(_cfg("train.epochs=1"), tmp_path / "resumed", dataset=small_digits, progress=False)
    resumed = train_and_evaluate(_cfg("train.epochs=2"), tmp_path / "resumed", dataset=small_digits, progress=False)
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(a, b)
    # the same objective by name on the command line; evaluated with the plugin, refused without it
    args = ["train", "--plugin", EXAMPLE, "--workdir", str(tmp_path / "cli"), "--no-progress", "--model", "vae"]
    assert cli.main([*args, "--set", "data.source=embedded", *[f"--set={s}" for s in SMALL], "--epochs", "1"]) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["train"]["objective"] == "capacity"
    out = tmp_path / "eval.json"
    evaluate = ["evaluate", "--workdir", str(tmp_path / "cli"), "--num-importance-samples", "20", "--out", str(out)]
    assert cli.main([*evaluate, "--plugin", EXAMPLE]) == 0
    result = json.loads(out.read_text())
    assert result["nll"] < result["neg_elbo"] and result["num_importance_samples"] == 20  # K = 20 tightens the bound
    capsys.readouterr()
    objectives.REGISTRY._factories.pop("capacity")  # as in a process that never imported the file
    try:
        assert cli.main(evaluate) == 2
        assert "unknown objective 'capacity'" in capsys.readouterr().err
    finally:
        objectives.register("capacity")(plugins_module().capacity_objective)


def plugins_module():
    import sys

    return sys.modules["cvae_jax_plugin_custom_objective"]


def test_an_unregistered_objective_is_a_clear_error(small_digits):
    cfg = apply_overrides(get_config("vae"), [*SMALL[:-3], "train.objective=nonexistent"])
    with pytest.raises(ConfigError, match=r"unknown objective 'nonexistent'.*registered: \[.*'elbo'.*--plugin"):
        train_and_evaluate(cfg, None, dataset=small_digits, progress=False)
    assert {"elbo", "iwae", "hybrid"} <= set(objectives.names())
