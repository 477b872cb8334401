"""A user-defined posterior in its own file (experiments/custom_posterior.py, the docs/posteriors.md
example: planar flows) is picked by name: its log-density is the change of variables computed by
automatic differentiation, it trains through train_and_evaluate and `cvae-jax train --plugin`, the
importance-sampled NLL uses its own log q, and it resumes bit-identically."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax import cli, plugins
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.core import distributions, posteriors
from cvae_jax.tasks.images import train_and_evaluate

EXAMPLE = str(Path(__file__).resolve().parents[1] / "experiments" / "custom_posterior.py")
SMALL = [
    "model.latent_dim=4",
    "model.encoder_hidden=64",
    "model.decoder_hidden=64",
    "train.batch_size=50",
    "data.validation=0",
    "checkpoint.every_epochs=1",
    "model.posterior=planar",
]


def _cfg(*extra):
    plugins.load([EXAMPLE])
    return apply_overrides(get_config("vae"), SMALL + list(extra))


@pytest.mark.slow
def test_planar_log_density_is_the_change_of_variables_by_autodiff():
    plugins.load([EXAMPLE])
    flows = posteriors.make("planar", get_config("vae").model.__class__(latent_dim=3))
    mean, log_var = jnp.array([[0.3, -1.0, 0.5]]), jnp.array([[-0.5, 0.2, 0.0]])
    params = flows.init(jax.random.key(0), jax.random.key(1), mean, log_var, 1, method=flows.sample)
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)  # away from zero
    key = jax.random.key(5)
    z, log_q = flows.apply(params, key, mean, log_var, 6, method=flows.sample)
    z0 = mean + jnp.exp(0.5 * log_var) * distributions.normal(key, (6, *mean.shape))

    def forward(z0_row):  # the flow alone, for its Jacobian
        out, _ = flows.apply(params, key, z0_row[None], jnp.full((1, 3), -60.0), 1, method=flows.sample)
        return out[0, 0]

    for k in range(6):
        jacobian = jax.jacfwd(lambda v: forward(v))(z0[k, 0])
        expected = distributions.diag_gaussian_log_prob(z0[k], mean, log_var) - jnp.log(
            jnp.abs(jnp.linalg.det(jacobian))
        )
        np.testing.assert_allclose(log_q[k], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(z[k, 0], forward(z0[k, 0]), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_registered_posterior_trains_evaluates_and_resumes(small_digits, tmp_path, capsys):
    straight = train_and_evaluate(_cfg("train.epochs=2"), tmp_path / "py", dataset=small_digits, progress=False)
    assert set(straight.state.params["params"]["posterior"]) == {"u", "w", "b"}  # trained with the model
    tests = [e for e in straight.history if e["split"] == "test"]
    assert tests[-1]["neg_elbo"] < tests[0]["neg_elbo"] and "kl_per_dim" not in tests[-1]
    train_and_evaluate(_cfg("train.epochs=1"), tmp_path / "resumed", dataset=small_digits, progress=False)
    resumed = train_and_evaluate(_cfg("train.epochs=2"), tmp_path / "resumed", dataset=small_digits, progress=False)
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(a, b)
    args = ["train", "--plugin", EXAMPLE, "--workdir", str(tmp_path / "cli"), "--no-progress", "--model", "vae"]
    assert cli.main([*args, "--set", "data.source=embedded", *[f"--set={s}" for s in SMALL], "--epochs", "1"]) == 0
    out = tmp_path / "eval.json"
    evaluate = ["evaluate", "--workdir", str(tmp_path / "cli"), "--num-importance-samples", "20", "--out", str(out)]
    assert cli.main([*evaluate, "--plugin", EXAMPLE]) == 0
    result = json.loads(out.read_text())
    assert result["nll"] < result["neg_elbo"] and result["mutual_information"] is None
    capsys.readouterr()
    saved = posteriors.REGISTRY._factories.pop("planar")  # as in a process that never imported the file
    try:
        assert cli.main(evaluate) == 2
        assert "unknown posterior 'planar'" in capsys.readouterr().err
    finally:
        posteriors.register("planar")(saved)
