"""Log-densities and KL against closed forms, numerical integration and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.core import distributions as D


@pytest.mark.parametrize("jit", [False, True])
def test_bernoulli_log_prob_matches_log_sigmoid(jit):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5, 6)) * 3
    x = (rng.uniform(size=(4, 5, 6)) > 0.5).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-logits))
    expected = np.sum(np.where(x == 1, np.log(p), np.log1p(-p)), axis=(1, 2))
    fn = jax.jit(D.bernoulli_log_prob, static_argnums=2) if jit else D.bernoulli_log_prob
    got = fn(jnp.asarray(x, jnp.float32), jnp.asarray(logits, jnp.float32), 2)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_bernoulli_of_intensities_is_cross_entropy():
    x = np.array([[0.25, 0.9]])
    logits = np.array([[0.3, -1.2]])
    p = 1.0 / (1.0 + np.exp(-logits))
    expected = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=1)
    np.testing.assert_allclose(D.bernoulli_log_prob(x, logits, 1), expected, rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_gaussian_log_prob_matches_density(jit):
    rng = np.random.default_rng(1)
    x, loc = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    log_scale = rng.normal(size=(3, 7)) * 0.5
    sigma = np.exp(log_scale)
    density = np.exp(-((x - loc) ** 2) / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma**2)
    fn = jax.jit(D.gaussian_log_prob, static_argnums=3) if jit else D.gaussian_log_prob
    np.testing.assert_allclose(fn(x, loc, log_scale, 1), np.log(density).sum(1), rtol=1e-5)


def test_kl_to_standard_normal_matches_numerical_integral_1d():
    grid = np.linspace(-30, 30, 400001)
    for mean, log_var in [(0.0, 0.0), (1.5, -1.0), (-0.7, 1.2)]:
        var = np.exp(log_var)
        log_q = -0.5 * (grid - mean) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
        log_p = -0.5 * grid**2 - 0.5 * np.log(2 * np.pi)
        integral = np.trapezoid(np.exp(log_q) * (log_q - log_p), grid)
        got = D.kl_to_standard_normal(jnp.array([mean]), jnp.array([log_var]))
        np.testing.assert_allclose(got, integral, rtol=1e-4, atol=1e-6)


def test_kl_diag_gaussians_matches_monte_carlo_and_reduces_to_standard_normal():
    key = jax.random.key(0)
    kq, kp, ks = jax.random.split(key, 3)
    mq, lq = jax.random.normal(kq, (2, 4)) * 0.8
    mp, lp = jax.random.normal(kp, (2, 4)) * 0.8
    analytic = D.kl_diag_gaussians(mq, lq, mp, lp)
    z = D.sample_diag_gaussian(ks, jnp.broadcast_to(mq, (200000, 4)), jnp.broadcast_to(lq, (200000, 4)))
    mc = jnp.mean(D.diag_gaussian_log_prob(z, mq, lq) - D.diag_gaussian_log_prob(z, mp, lp))
    np.testing.assert_allclose(analytic, mc, rtol=0.02)
    zeros = jnp.zeros(4)
    np.testing.assert_allclose(D.kl_diag_gaussians(mq, lq, zeros, zeros), D.kl_to_standard_normal(mq, lq), rtol=1e-6)
    np.testing.assert_allclose(D.kl_diag_gaussians(mq, lq, mq, lq), 0.0, atol=1e-6)


def test_kl_sums_over_latent_dims_and_keeps_batch():
    mean = jnp.ones((5, 3))
    log_var = jnp.zeros((5, 3))
    kl = D.kl_to_standard_normal(mean, log_var)
    assert kl.shape == (5,)
    np.testing.assert_allclose(kl, 1.5)  # 3 dims x 0.5 * mean^2


def test_standard_normal_log_prob_is_diag_gaussian_at_zero():
    z = jax.random.normal(jax.random.key(3), (6, 4))
    np.testing.assert_allclose(
        D.standard_normal_log_prob(z), D.diag_gaussian_log_prob(z, jnp.zeros(4), jnp.zeros(4)), rtol=1e-6
    )


@pytest.mark.parametrize("partitionable", [True, False])
def test_flat_draws_are_jax_draws_bit_for_bit(partitionable):
    """distributions.normal / bernoulli draw flat and reshape (a faster compile on XLA:CPU): the numbers
    must be jax.random's own for the same key and shape, under both threefry counter layouts, in a
    compiled program (fused with what uses them) as well as op by op."""
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", partitionable)
    try:
        key = jax.random.key(7)
        p = jax.random.uniform(jax.random.key(1), (5, 6, 7, 1))
        for shape, dtype in [((4, 3, 5), jnp.float32), ((2, 9, 7, 3), jnp.bfloat16), ((6,), jnp.float32)]:
            expected = jax.random.normal(key, shape, dtype)
            assert np.array_equal(D.normal(key, shape, dtype), expected)
            fused = [
                jax.jit(lambda k, draw=draw: 2.0 * draw(k, shape, dtype) + 1.0)(key)
                for draw in (D.normal, jax.random.normal)
            ]
            assert np.array_equal(*fused)
        assert np.array_equal(D.bernoulli(key, p), jax.random.bernoulli(key, p))
        assert np.array_equal(jax.jit(D.bernoulli)(key, p), jax.random.bernoulli(key, p))
    finally:
        jax.config.update("jax_threefry_partitionable", previous)
