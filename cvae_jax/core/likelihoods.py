"""Decoder likelihoods, told apart by the parameters the decoder returns.

{"logits": l}                 Bernoulli(sigmoid(l)) per data dimension
{"loc": m, "log_scale": s}    Gaussian N(m, exp(s)^2) per data dimension (fixed or learned scale)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cvae_jax.core import distributions


def log_likelihood(x: jax.Array, params: dict[str, jax.Array]) -> jax.Array:
    """log p(x | decoder params), summed over all but the batch axis: one value per example, in nats."""
    event_ndim = x.ndim - 1
    if "logits" in params:
        return distributions.bernoulli_log_prob(x, params["logits"], event_ndim)
    return distributions.gaussian_log_prob(x, params["loc"], params["log_scale"], event_ndim)


def mean(params: dict[str, jax.Array]) -> jax.Array:
    """The likelihood's mean, clipped to the data range [0, 1]: what pictures and `sample` show."""
    if "logits" in params:
        return jax.nn.sigmoid(params["logits"])
    return jnp.clip(params["loc"], 0.0, 1.0)
