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
