"""The documented custom-prior example works from the user's own file, without library changes."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.apps import evaluate
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.tasks.images import train_and_evaluate

EXAMPLE = Path(__file__).resolve().parents[1] / "experiments" / "custom_prior_laplace.py"


@pytest.mark.slow
def test_laplace_prior_from_user_file_trains_and_evaluates(small_digits):
    spec = importlib.util.spec_from_file_location("custom_prior_laplace", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prior = module.LaplacePrior(latent_dim=2)
    params = prior.init(jax.random.key(0), jnp.zeros((1, 2)))
    # Normalized: the density integrates to 1 on a grid.
    axis = np.linspace(-25, 25, 1001)
    z = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    mass = (
        np.exp(np.asarray(prior.apply(params, jnp.asarray(z, jnp.float32), method=prior.log_prob))).sum()
        * (axis[1] - axis[0]) ** 2
    )
    assert abs(mass - 1.0) < 5e-3
    cfg = apply_overrides(
        get_config("vae"),
        [
            "model.prior=laplace",
            "model.latent_dim=4",
            "model.encoder_hidden=64",
            "model.decoder_hidden=64",
            "train.epochs=3",
            "train.batch_size=32",
        ],
    )
    run = train_and_evaluate(cfg, None, dataset=small_digits, progress=False)
    tests = [e["neg_elbo"] for e in run.history if e["split"] == "test"]
    assert tests[-1] < 0.7 * tests[0]
    result = evaluate.evaluate_model(
        run.model, run.state.params, cfg, small_digits, num_importance_samples=50, chunk=50, num_examples=50
    )
    assert result["nll"] <= result["neg_elbo"] + 1.0  # the importance-sampled bound is the tighter one
