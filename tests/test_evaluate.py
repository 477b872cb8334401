"""The importance-sampled log-likelihood is exact where p(x) is known; latent-usage metrics behave."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.apps import evaluate
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.core.models import build_model


def linear_gaussian(exact_encoder: bool):
    """x = W z + b + sigma * noise, z ~ N(0, I): p(x) = N(b, W W^T + sigma^2 I). W has orthogonal columns, so
    the true posterior is a diagonal Gaussian, which the (linear) encoder can represent exactly."""
    sigma, d_x, d_z = 0.5, 4, 2
    cfg = apply_overrides(
        get_config("vae"),
        [
            "model.likelihood=gaussian",
            f"model.gaussian_scale={sigma}",
            f"model.latent_dim={d_z}",
            "model.encoder_hidden=()",
            "model.decoder_hidden=()",
        ],
    )
    model = build_model(cfg.model, (1, d_x, 1))
    params = model.init(jax.random.key(0), jnp.zeros((1, 1, d_x, 1)))
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d_x, d_z)))
    w = q * np.array([1.5, 0.7])  # orthogonal columns of different lengths
    b = np.array([0.1, -0.2, 0.3, 0.05])
    post_var = 1.0 / (1.0 + (w**2).sum(0) / sigma**2)  # diagonal because W^T W is diagonal
    enc_kernel = w * post_var / sigma**2  # mean = post_var * W^T (x - b) / sigma^2
    p = jax.tree.map(np.asarray, params)["params"]
    p["decoder"]["out"] = {"kernel": w.T.astype(np.float32), "bias": b.astype(np.float32)}
    if exact_encoder:
        p["encoder"]["mean"] = {"kernel": enc_kernel.astype(np.float32), "bias": (-b @ enc_kernel).astype(np.float32)}
        p["encoder"]["log_var"] = {
            "kernel": np.zeros((d_x, d_z), np.float32),
            "bias": np.log(post_var).astype(np.float32),
        }
    params = {"params": p}
    cov = w @ w.T + sigma**2 * np.eye(d_x)
    x = np.random.default_rng(1).multivariate_normal(b, cov, size=8)
    diff = x - b
    exact = -0.5 * (
        np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        + np.linalg.slogdet(cov)[1]
        + d_x * math.log(2 * math.pi)
    )
    batch = {"image": x.reshape(8, 1, d_x, 1).astype(np.float32), "label": np.zeros(8, np.int32)}
    return model, params, batch, exact


def test_log_likelihood_is_exact_with_the_true_posterior():
    model, params, batch, exact = linear_gaussian(exact_encoder=True)
    fn = jax.jit(evaluate.make_log_likelihood(model, num_classes=1, num_samples=20, chunk=10))
    np.testing.assert_allclose(fn(params, batch, jax.random.key(0)), exact, rtol=1e-4, atol=1e-4)


def test_log_likelihood_converges_with_an_approximate_posterior():
    model, params, batch, exact = linear_gaussian(exact_encoder=False)
    small = jax.jit(evaluate.make_log_likelihood(model, num_classes=1, num_samples=10, chunk=10))
    large = jax.jit(evaluate.make_log_likelihood(model, num_classes=1, num_samples=5000, chunk=500))
    est_small = np.asarray(small(params, batch, jax.random.key(0)))
    est_large = np.asarray(large(params, batch, jax.random.key(0)))
    assert np.all(est_large <= exact + 0.05)  # a lower bound (in expectation)
    assert np.abs(est_large - exact).mean() < np.abs(est_small - exact).mean()
    np.testing.assert_allclose(est_large, exact, atol=0.15)


def test_chunk_must_divide_samples():
    model, _, _, _ = linear_gaussian(True)
    with pytest.raises(ValueError, match="multiple of chunk"):
        evaluate.make_log_likelihood(model, num_classes=1, num_samples=30, chunk=20)


def test_active_units_counts_varying_means():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(size=500), 0.001 * rng.normal(size=500), rng.normal(size=500) * 0.2], 1)
    count, variances = evaluate.active_units(means)
    assert count == 2 and variances[1] < 0.01


def test_mutual_information_zero_when_posterior_ignores_x_and_positive_otherwise():
    rng = np.random.default_rng(0)
    n, d = 400, 2
    z = rng.normal(size=(n, d))
    assert evaluate.mutual_information(np.zeros((n, d)), np.zeros((n, d)), z) == pytest.approx(
        0.0, abs=0.05
    )  # Monte Carlo estimate
    means = rng.normal(size=(n, d)) * 3
    log_var = np.full((n, d), np.log(0.01))
    z = means + 0.1 * rng.normal(size=(n, d))
    mi = evaluate.mutual_information(means, log_var, z)
    assert 3.0 < mi <= math.log(n) + 1e-6  # bounded by log N for N examples


def test_mutual_information_in_blocks_equals_the_direct_table():
    """The blocked matrix-product form against log q(z_i | x_n) written out as [N, N, D] Gaussians
    (scipy's logpdf), with N not a multiple of the block."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    n, d = 300, 3
    means, log_var = rng.normal(size=(n, d)) * 2, rng.normal(size=(n, d)) * 0.5
    z = means + np.exp(0.5 * log_var) * rng.normal(size=(n, d))
    log_q = norm.logpdf(z[:, None, :], means[None], np.exp(0.5 * log_var)[None]).sum(-1)  # [N (z), N (x_n)]
    entropy = norm.entropy(scale=np.exp(0.5 * log_var)).sum(1)
    expected = -entropy.mean() - np.mean(logsumexp(log_q, axis=1) - math.log(n))
    for block in (7, 64, 1000):
        assert evaluate.mutual_information(means, log_var, z, block=block) == pytest.approx(expected, rel=1e-10)
