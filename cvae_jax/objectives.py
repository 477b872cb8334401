"""The ELBO as per-example terms, reduced once.

Conventions (the same everywhere in the library, and impossible to change by accident):
  * recon  = -log p(x | z), summed over every data dimension (pixels and channels), in nats;
  * kl     = KL(q(z | x[, c]) || p(z)), summed over latent dimensions, in nats;
  * neg_elbo = recon + kl, per example; the batch value is the mean over examples.
  * beta weights the KL in the *training loss* only; `neg_elbo` is always the true (beta = 1) bound.
Summing over pixels but averaging over the batch is what makes the ELBO a bound on -log p(x) per
example; averaging over pixels instead silently rescales the KL by 1/D (a beta of 1/784 on MNIST).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cvae_jax import distributions, likelihoods
from cvae_jax.models import VAE

# Purposes for keys derived inside a step: fold_in(step_key, purpose).
BINARIZE, LATENT = 0, 1

Terms = dict[str, jax.Array]


def condition_of(batch: dict[str, jax.Array], num_classes: int) -> jax.Array | None:
    """The conditioning vector of a batch: batch["condition"] if given, else one-hot batch["label"]."""
    if "condition" in batch:
        return batch["condition"].astype(jnp.float32)
    return jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)


def make_elbo_terms(model: VAE, *, num_classes: int, binarize: bool = False) -> Callable[..., Terms]:
    """Returns terms(params, batch, key) -> {"recon", "kl", "neg_elbo"}, each of shape [B]."""

    def terms(params, batch, key) -> Terms:
        x = batch["image"]
        if binarize:
            x = jax.random.bernoulli(jax.random.fold_in(key, BINARIZE), x).astype(x.dtype)
        condition = condition_of(batch, num_classes) if model.conditional else None
        mean, log_var = model.apply(params, x, condition, method=model.encode)
        z = distributions.sample_diag_gaussian(jax.random.fold_in(key, LATENT), mean, log_var)
        decoded = model.apply(params, z, condition, method=model.decode)
        recon = -likelihoods.log_likelihood(x, decoded)
        kl = distributions.kl_to_standard_normal(mean, log_var)
        return {"recon": recon, "kl": kl, "neg_elbo": recon + kl}

    return terms


def make_elbo_loss(terms_fn: Callable[..., Terms], *, beta: float = 1.0):
    """Returns loss(params, batch, key) -> (scalar loss, batch-mean metrics) for the beta-ELBO."""

    def loss(params, batch, key):
        terms = terms_fn(params, batch, key)
        value = jnp.mean(terms["recon"] + beta * terms["kl"])
        metrics = {name: jnp.mean(v) for name, v in terms.items()}
        metrics["loss"] = value
        return value, metrics

    return loss
