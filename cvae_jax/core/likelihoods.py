"""Decoder likelihoods, told apart by the parameters the decoder returns.

{"logits": l}                 Bernoulli(sigmoid(l)) per data dimension
{"loc": m, "log_scale": s}    Gaussian N(m, exp(s)^2) per data dimension (fixed or learned scale)
{"mixture_logits": w, "mixture_loc": m, "mixture_log_scale": s}
                              a mixture of K discretized logistics per data dimension, for 8-bit
                              data: each [..., H, W, C, K], on [-1, 1]
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
    if "mixture_logits" in params:  # a trailing mixture axis after the data dimensions
        flat = {k: v.reshape(*v.shape[: v.ndim - event_ndim - 1], -1, v.shape[-1]) for k, v in params.items()}
        parts = (flat["mixture_logits"], flat["mixture_loc"], flat["mixture_log_scale"])
        return distributions.discretized_logistic_mixture_log_prob(x, *parts, 1)
    flat = {name: value.reshape(*value.shape[: value.ndim - event_ndim], -1) for name, value in params.items()}
    if "logits" in flat:
        return distributions.bernoulli_log_prob(x, flat["logits"], 1)
    return distributions.gaussian_log_prob(x, flat["loc"], flat["log_scale"], 1)


def mean(params: dict[str, jax.Array]) -> jax.Array:
    """The likelihood's mean, clipped to the data range [0, 1]: what pictures and `sample` show."""
    if "logits" in params:
        return jax.nn.sigmoid(params["logits"])
    if "mixture_logits" in params:
        weights = jax.nn.softmax(params["mixture_logits"], axis=-1)
        return jnp.clip((jnp.sum(weights * params["mixture_loc"], axis=-1) + 1.0) / 2.0, 0.0, 1.0)
    return jnp.clip(params["loc"], 0.0, 1.0)


def outputs_per_dimension(likelihood: str, mixtures: int) -> int:
    """How many numbers the decoder produces per data dimension for `likelihood`."""
    return 3 * mixtures if likelihood == "discretized_logistic" else 1


def from_decoder(out: jax.Array, likelihood: str, mixtures: int, log_scale: jax.Array | None = None) -> dict:
    """The likelihood parameters of a decoder's raw output [B, H, W, C * outputs_per_dimension] (float32).
    Gaussian: `log_scale` broadcast to the output's shape."""
    if likelihood == "bernoulli":
        return {"logits": out}
    if likelihood == "gaussian":
        return {"loc": out, "log_scale": jnp.broadcast_to(log_scale, out.shape)}
    parts = out.reshape(*out.shape[:-1], -1, 3, mixtures)  # [B, H, W, C, 3, K]
    return {"mixture_logits": parts[..., 0, :], "mixture_loc": parts[..., 1, :], "mixture_log_scale": parts[..., 2, :]}
