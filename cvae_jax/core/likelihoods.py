"""Decoder likelihoods, told apart by the parameters the decoder returns.

{"logits": l}                 Bernoulli(sigmoid(l)) per data dimension
{"loc": m, "log_scale": s}    Gaussian N(m, exp(s)^2) per data dimension (fixed or learned scale)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cvae_jax.core import distributions


def log_likelihood(x: jax.Array, params: dict[str, jax.Array]) -> jax.Array:
    """log p(x | decoder params), summed over all but the batch axis of x: one value per example, in
    nats. The parameters may carry leading sample axes ([K, B, ...] against x [B, ...]): then [K, B]."""
    # One event axis: XLA:CPU reduces over the flattened data dimensions much faster than over
    # [H, W, C] (with its trailing size-1 channel axis) of the same values.
    event_ndim = x.ndim - 1
    x = x.reshape(x.shape[0], -1)
    flat = {name: value.reshape(*value.shape[: value.ndim - event_ndim], -1) for name, value in params.items()}
    if "logits" in flat:
        return distributions.bernoulli_log_prob(x, flat["logits"], 1)
    return distributions.gaussian_log_prob(x, flat["loc"], flat["log_scale"], 1)


def mean(params: dict[str, jax.Array]) -> jax.Array:
    """The likelihood's mean, clipped to the data range [0, 1]: what pictures and `sample` show."""
    if "logits" in params:
        return jax.nn.sigmoid(params["logits"])
    return jnp.clip(params["loc"], 0.0, 1.0)
