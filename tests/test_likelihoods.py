"""The discretized logistic mixture likelihood for 8-bit images, against a direct computation of each
bin's probability mass, and the property that makes it a likelihood: the 256 values' masses sum to 1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.config import ConfigError, apply_overrides, get_config, validate
from cvae_jax.core import distributions, likelihoods
from cvae_jax.core.models import build_model


def _direct(x, logits, loc, log_scale, bins=256):
    """float64, component by component: the logistic CDF's mass on each value's bin on [-1, 1]."""
    y, half = 2 * x - 1, 1 / (bins - 1)
    scale = np.exp(np.maximum(log_scale, -7.0))

    def cdf(v):
        return 1 / (1 + np.exp(-(v - loc) / scale))

    upper = np.where(y[..., None] > 1 - half, 1.0, cdf(y[..., None] + half))
    lower = np.where(y[..., None] < -1 + half, 0.0, cdf(y[..., None] - half))
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.log(np.sum(weights * (upper - lower), axis=-1)).sum(-1)


def test_mixture_log_prob_matches_the_bin_masses_computed_directly():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(4, 30)) / 255.0
    x[0, :3] = [0.0, 1.0, 0.5]  # both edge bins and the middle
    logits, loc = rng.normal(size=(4, 30, 5)), rng.uniform(-1, 1, size=(4, 30, 5))
    log_scale = rng.uniform(-4, -1, size=(4, 30, 5))
    ours = distributions.discretized_logistic_mixture_log_prob(
        jnp.asarray(x, jnp.float32), *(jnp.asarray(a, jnp.float32) for a in (logits, loc, log_scale)), event_ndim=1
    )
    np.testing.assert_allclose(np.asarray(ours), _direct(x, logits, loc, log_scale), rtol=1e-4)


@pytest.mark.parametrize("log_scale", [-5.0, -2.0, 0.5])
def test_the_256_values_probabilities_sum_to_one(log_scale):
    values = jnp.arange(256, dtype=jnp.float32)[:, None] / 255.0  # each value as a one-dimensional example
    params = [jnp.broadcast_to(jnp.asarray(v, jnp.float32), (256, 1, 3)) for v in ([0.3, -1.0, 2.0], [-0.9, 0.1, 0.7])]
    log_p = distributions.discretized_logistic_mixture_log_prob(
        values, *params, jnp.full((256, 1, 3), log_scale), event_ndim=1
    )
    assert float(jnp.sum(jnp.exp(log_p))) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.slow
def test_a_colour_model_returns_mixture_parameters_and_its_mean_in_range():
    cfg = apply_overrides(
        get_config("vae"), ["model.likelihood=discretized_logistic", "model.logistic_mixtures=3", "model.latent_dim=4"]
    )
    model = build_model(validate(cfg).model, (8, 8, 3))
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)) / 255.0, jnp.float32)
    params = model.init(jax.random.key(0), x)
    out = model.apply(params, jnp.zeros((2, 4)), method=model.decode)
    assert {k: v.shape for k, v in out.items()} == {k: (2, 8, 8, 3, 3) for k in out}
    assert set(out) == {"mixture_logits", "mixture_loc", "mixture_log_scale"}
    mean = likelihoods.mean(out)
    assert mean.shape == (2, 8, 8, 3) and float(mean.min()) >= 0 and float(mean.max()) <= 1
    log_lik = likelihoods.log_likelihood(x, out)  # summed over the image's 8 x 8 x 3 values
    flat = [np.asarray(out[k], np.float64).reshape(2, -1, 3) for k in ("mixture_logits", "mixture_loc")]
    direct = _direct(
        np.asarray(x, np.float64).reshape(2, -1), *flat, np.asarray(out["mixture_log_scale"]).reshape(2, -1, 3)
    )
    np.testing.assert_allclose(np.asarray(log_lik), direct, rtol=1e-4)
    with pytest.raises(ConfigError, match="logistic_mixtures"):
        validate(apply_overrides(cfg, ["model.logistic_mixtures=0"]))
