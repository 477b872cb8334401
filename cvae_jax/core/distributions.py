"""Log-densities and KL divergences, each returning one value per example.

Every function here sums over the event (data or latent) dimensions and keeps the batch
dimension, so per-example terms are in nats and a single reduction (the batch mean) happens once,
in the objective. There is deliberately no "mean over pixels" option anywhere in the library.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(x: jax.Array, event_ndim: int) -> jax.Array:
    return jnp.sum(x, axis=tuple(range(x.ndim - event_ndim, x.ndim))) if event_ndim else x


def bernoulli_log_prob(x: jax.Array, logits: jax.Array, event_ndim: int) -> jax.Array:
    """log Bernoulli(x | sigmoid(logits)) summed over the last `event_ndim` axes.

    `x` may be binary or an intensity in [0, 1] (then this is the usual cross-entropy, which is
    not a normalized density for non-binary x; use dynamic binarization for a proper likelihood).
    """
    return _sum_event(x * logits - jax.nn.softplus(logits), event_ndim)


def gaussian_log_prob(x: jax.Array, loc: jax.Array, log_scale: jax.Array, event_ndim: int) -> jax.Array:
    """log N(x | loc, exp(log_scale)^2) summed over the last `event_ndim` axes."""
    z = (x - loc) * jnp.exp(-log_scale)
    return _sum_event(-0.5 * z * z - log_scale - 0.5 * LOG_2PI, event_ndim)


def discretized_logistic_mixture_log_prob(
    x: jax.Array, logits: jax.Array, loc: jax.Array, log_scale: jax.Array, event_ndim: int, bins: int = 256
) -> jax.Array:
    """log p(x) of a mixture of K discretized logistics per data dimension (Salimans et al. 2017's
    PixelCNN++ likelihood without its channel coupling; K = 1 is Kingma et al. 2016's), summed over
    the last `event_ndim` axes of x.

    x holds 8-bit values scaled to [0, 1] (k / (bins - 1)); the mixture parameters have one more
    trailing axis, K, and live on [-1, 1]. Each component puts on x the logistic mass of its bin,
    [x - 1/(bins-1), x + 1/(bins-1)] on that scale, with the edge bins taking the tails, so the
    probabilities of the `bins` values sum to 1: a proper discrete likelihood (bits/dim comparable)."""
    y = (2.0 * x - 1.0)[..., None]
    half = 1.0 / (bins - 1)
    log_scale = jnp.maximum(log_scale, -7.0)
    inv = jnp.exp(-log_scale)
    centred = y - loc
    upper, lower = inv * (centred + half), inv * (centred - half)
    log_cdf_upper = upper - jax.nn.softplus(upper)  # log sigmoid: the left edge bin's mass
    log_survival_lower = -jax.nn.softplus(lower)  # log (1 - sigmoid): the right edge bin's mass
    mass = jax.nn.sigmoid(upper) - jax.nn.sigmoid(lower)
    middle = inv * centred
    # Where the bin's mass underflows, its density at the centre times the bin width.
    log_density = middle - log_scale - 2.0 * jax.nn.softplus(middle) + math.log(2 * half)
    log_inner = jnp.where(mass > 1e-5, jnp.log(jnp.maximum(mass, 1e-12)), log_density)
    log_probs = jnp.where(y < -1 + half, log_cdf_upper, jnp.where(y > 1 - half, log_survival_lower, log_inner))
    mixed = jax.nn.logsumexp(log_probs + jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return _sum_event(mixed, event_ndim)


def diag_gaussian_log_prob(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """log N(z | mean, diag(exp(log_var))) summed over the last axis."""
    return gaussian_log_prob(z, mean, 0.5 * log_var, event_ndim=1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z | 0, I) summed over the last axis."""
    return jnp.sum(-0.5 * z * z - 0.5 * LOG_2PI, axis=-1)


def kl_diag_gaussians(mean_q, log_var_q, mean_p, log_var_p) -> jax.Array:
    """KL(N(mean_q, diag var_q) || N(mean_p, diag var_p)), summed over the last axis."""
    return 0.5 * jnp.sum(
        log_var_p - log_var_q + (jnp.exp(log_var_q) + (mean_q - mean_p) ** 2) * jnp.exp(-log_var_p) - 1.0,
        axis=-1,
    )


def kl_to_standard_normal(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mean, diag exp(log_var)) || N(0, I)), summed over the last axis."""
    return 0.5 * jnp.sum(jnp.exp(log_var) + mean * mean - 1.0 - log_var, axis=-1)


def normal(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """jax.random.normal(key, shape, dtype), drawn flat and reshaped: the same numbers (threefry numbers
    its counters in row-major order, with jax_threefry_partitionable on or off), but XLA:CPU compiles a
    multi-dimensional draw several times slower (e.g. the anomaly scorer's [K, B, D] draws)."""
    shape = tuple(shape)
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def bernoulli(key: jax.Array, p: jax.Array) -> jax.Array:
    """jax.random.bernoulli(key, p), drawn flat like `normal` (the same booleans, a faster compile)."""
    return jax.random.bernoulli(key, p.reshape(-1)).reshape(p.shape)


def sample_diag_gaussian(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """A reparameterized draw z = mean + std * eps."""
    return mean + jnp.exp(0.5 * log_var) * normal(key, mean.shape, mean.dtype)
