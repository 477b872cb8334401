"""Posteriors q(z | x[, c]): built on the encoder's (mean, log_var), each gives reparameterized samples
and their log-density. An open registry, as priors are: `model.posterior=NAME` picks one, and a user
registers their own in a file of theirs (docs/posteriors.md).

Interface (a Flax module, its parameters under params["params"]["posterior"]):
    sample(key, mean, log_var, num_samples) -> (z [K, B, D], log_q [K, B])
    gaussian: True when q is N(mean, diag exp(log_var)) itself, so that the library may use its closed
        forms (an analytic KL to a prior that has one, the per-dimension KL, the mutual information).

The ELBO's KL is then log q(z | x) - log p(z) at the sample, and the importance-sampled likelihood
weighs each sample by its own log q, for any posterior.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.core import distributions as D
from cvae_jax.core.registry import Registry


class Posterior(nn.Module):
    latent_dim: int

    gaussian = False

    def sample(self, key, mean, log_var, num_samples: int):
        raise NotImplementedError


class DiagonalGaussian(Posterior):
    """q(z | x) = N(mean, diag exp(log_var)): the library's default."""

    gaussian = True

    def sample(self, key, mean, log_var, num_samples: int):
        eps = D.normal(key, (num_samples, *mean.shape), mean.dtype)
        z = mean + jnp.exp(0.5 * log_var) * eps
        return z, D.diag_gaussian_log_prob(z, mean, log_var)


# ---------------------------------------------------------------- registry: name -> factory(model_cfg)
Factory = Callable[..., Posterior]
REGISTRY: Registry[Factory] = Registry("posterior", "model.posterior", "cvae_jax.core.posteriors")
register = REGISTRY.register  # decorator: registers `factory(model_cfg) -> Posterior`
names = REGISTRY.names


def make(name: str, cfg) -> Posterior:
    return REGISTRY.get(name)(cfg)


def is_gaussian(posterior: Posterior | None) -> bool:
    """Whether q is the diagonal Gaussian of the encoder's outputs (None: a model without a posterior
    module, which is one)."""
    return posterior is None or bool(getattr(posterior, "gaussian", False))


def sample(model, params, key, mean, log_var, num_samples: int) -> tuple[jax.Array, jax.Array]:
    """(z [K, B, D], log q [K, B]) from `model`'s posterior."""
    if model.posterior is None:
        return DiagonalGaussian(mean.shape[-1]).sample(key, mean, log_var, num_samples)
    return model.apply(params, key, mean, log_var, num_samples, method=model.posterior_sample)


register("diagonal_gaussian")(lambda cfg: DiagonalGaussian(cfg.latent_dim))

__all__ = ["DiagonalGaussian", "Posterior", "is_gaussian", "make", "names", "register", "sample"]
