"""Posteriors q(z | x[, c]): built on the encoder's (mean, log_var), each gives reparameterized samples
and their log-density. An open registry, as priors are: `model.posterior=NAME` picks one, and a user
registers their own in a file of theirs (docs/posteriors.md).

Interface (a Flax module, its parameters under `params["params"]["posterior"]`):
    sample(key, mean, log_var, num_samples[, context]) -> (z [K, B, D], log_q [K, B])
    log_prob(z, mean, log_var[, context]) -> log q(z | x) [..., B] of any z [..., B, D] (optional: the
        mutual information I(x; z) needs it, to score every example's z under every other's q)
    gaussian: True when q is N(mean, diag exp(log_var)) itself, so that the library may use its closed
        forms (an analytic KL to a prior that has one, the per-dimension KL, the mutual information).
    context_dim: > 0 when q needs more of x than (mean, log_var): the encoder then also emits a context
        vector [B, context_dim] (amortized, a function of x), passed to `sample` as `context`.

Library entries: "diagonal_gaussian" (the default), "full_covariance" (a Gaussian with an amortized
Cholesky factor) and "iaf" (inverse autoregressive flow, Kingma et al. 2016).

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
    context_dim = 0

    def sample(self, key, mean, log_var, num_samples: int):
        raise NotImplementedError


class DiagonalGaussian(Posterior):
    """q(z | x) = N(mean, diag exp(log_var)): the library's default."""

    gaussian = True

    def sample(self, key, mean, log_var, num_samples: int):
        eps = D.normal(key, (num_samples, *mean.shape), mean.dtype)
        z = mean + jnp.exp(0.5 * log_var) * eps
        return z, D.diag_gaussian_log_prob(z, mean, log_var)

    def log_prob(self, z, mean, log_var):
        return D.diag_gaussian_log_prob(z, mean, log_var)


class FullCovariance(Posterior):
    """q(z | x) = N(mean, L L^T), L lower-triangular with diagonal exp(log_var / 2) and its D (D - 1) / 2
    entries below the diagonal from the encoder's context: any correlation between latents, amortized.
    z = mean + L eps, eps ~ N(0, I); log q(z) = log N(eps | 0, I) - sum_d log L_dd."""

    @property
    def context_dim(self) -> int:
        return self.latent_dim * (self.latent_dim - 1) // 2

    def cholesky(self, log_var, context):
        """[B, D, D] lower-triangular factors of the covariances."""
        rows, cols = jnp.tril_indices(self.latent_dim, -1)
        lower = jnp.zeros((*log_var.shape, self.latent_dim), log_var.dtype).at[:, rows, cols].set(context)
        return lower + jax.vmap(jnp.diag)(jnp.exp(0.5 * log_var))

    def sample(self, key, mean, log_var, num_samples: int, context=None):
        eps = D.normal(key, (num_samples, *mean.shape), mean.dtype)
        z = mean + jnp.einsum("bij,kbj->kbi", self.cholesky(log_var, context), eps)
        return z, D.standard_normal_log_prob(eps) - 0.5 * jnp.sum(log_var, -1)

    def log_prob(self, z, mean, log_var, context):
        """log N(z | mean, L L^T) of z [..., B, D]: eps = L^-1 (z - mean) by a triangular solve."""
        chol = self.cholesky(log_var, context)  # [B, D, D]
        diff = jnp.moveaxis(z - mean, -2, 0)  # [B, ..., D]
        lead = diff.shape[1:-1]
        rhs = jnp.swapaxes(diff.reshape(diff.shape[0], -1, self.latent_dim), -1, -2)  # [B, D, M]
        eps = jax.scipy.linalg.solve_triangular(chol, rhs, lower=True)
        eps = jnp.moveaxis(jnp.swapaxes(eps, -1, -2).reshape(diff.shape[0], *lead, self.latent_dim), 0, -2)
        return D.standard_normal_log_prob(eps) - 0.5 * jnp.sum(log_var, -1)

    def kl_to_standard_normal(self, mean, log_var, context):
        """KL(N(mean, L L^T) || N(0, I)) [B] in closed form: (tr(L L^T) + |mean|^2 - D - log det L L^T) / 2,
        with tr(L L^T) the squared Frobenius norm of L and log det L L^T = sum log_var."""
        trace = jnp.sum(jnp.square(self.cholesky(log_var, context)), axis=(-2, -1))
        return 0.5 * (trace + jnp.sum(mean * mean, -1) - self.latent_dim - jnp.sum(log_var, -1))


class _MaskedDense(nn.Module):
    """A dense layer whose weight is multiplied by a fixed 0/1 mask [in, out] (MADE, Germain et al. 2015)."""

    mask: jax.Array
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        n_in, n_out = self.mask.shape
        init = nn.initializers.variance_scaling(self.init_scale, "fan_in", "truncated_normal")
        kernel = self.param("kernel", init, (n_in, n_out))
        bias = self.param("bias", nn.initializers.zeros, (n_out,))
        return x @ (kernel * self.mask) + bias


def made_masks(dim: int, hidden: int) -> tuple[jax.Array, jax.Array]:
    """MADE's masks for inputs of degrees 1..dim, one hidden layer (degrees cycling through 1..dim-1) and
    outputs of degrees 1..dim: output d depends only on inputs of degree < d."""
    inputs = jnp.arange(1, dim + 1)
    hid = jnp.arange(hidden) % max(dim - 1, 1) + 1
    return (hid[None, :] >= inputs[:, None]).astype(jnp.float32), (inputs[None, :] > hid[:, None]).astype(jnp.float32)


class IAF(Posterior):
    """Inverse autoregressive flow (Kingma et al. 2016, "Improved Variational Inference with Inverse
    Autoregressive Flow", eqs. 10-14): z_0 = mean + sigma eps, then for t = 1..T
    (m_t, s_t) = MADE_t(z_{t-1}, h), sigma_t = sigmoid(s_t), z_t = sigma_t z_{t-1} + (1 - sigma_t) m_t,
    the order of the latents reversed between steps; h is the encoder's context vector.
    log q(z_T) = log N(z_0 | mean, sigma^2) - sum_t sum_d log sigma_t,d."""

    steps: int = 2
    hidden: int = 64
    context_features: int = 32

    @property
    def context_dim(self) -> int:
        return self.context_features

    @nn.compact
    def __call__(self, z, context, inverse: bool = False):
        """(z_T, sum_t sum_d log sigma_t,d) of the flow from z_0 [..., B, D] with context [B, C]; with
        `inverse`, (z_0, the same log-determinant) from z_T."""
        mask_in, mask_out = made_masks(self.latent_dim, self.hidden)
        made = []
        for t in range(self.steps):
            layer_in = _MaskedDense(mask_in, name=f"made_{t}_in")
            layer_context = nn.Dense(self.hidden, name=f"made_{t}_context")
            layer_m = _MaskedDense(mask_out, 0.01, name=f"made_{t}_m")
            layer_s = _MaskedDense(mask_out, 0.01, name=f"made_{t}_s")

            def shift_and_gate(z, layer_in=layer_in, layer_context=layer_context, layer_m=layer_m, layer_s=layer_s):
                h = nn.elu(layer_in(z) + layer_context(context))
                # the gate's bias starts at +1.5 (sigma ~ 0.82): close to the identity, as the paper advises
                return layer_m(h), layer_s(h) + 1.5

            made.append(shift_and_gate)
        log_det = jnp.zeros(z.shape[:-1], z.dtype)
        if inverse:  # undo the steps last to first
            z = z[..., ::-1] if self.steps % 2 else z
            for shift_and_gate in reversed(made):
                z, step_log_det = self._invert_step(shift_and_gate, z[..., ::-1])
                log_det = log_det + step_log_det
            return z, log_det
        for shift_and_gate in made:
            m, s = shift_and_gate(z)
            sigma = jax.nn.sigmoid(s)
            z = sigma * z + (1.0 - sigma) * m
            log_det = log_det + jnp.sum(jax.nn.log_sigmoid(s), -1)
            z = z[..., ::-1]  # the next step's autoregressive order is the reverse
        return (z[..., ::-1] if self.steps % 2 else z), log_det

    def _invert_step(self, shift_and_gate, y):
        """x with sigma(x) x + (1 - sigma(x)) m(x) = y: m_d and sigma_d depend on x_<d only, so each pass
        of x <- (y - (1 - sigma(x)) m(x)) / sigma(x) makes one more coordinate exact; D passes invert."""
        x = y
        for _ in range(self.latent_dim):
            m, s = shift_and_gate(x)
            sigma = jax.nn.sigmoid(s)
            x = (y - (1.0 - sigma) * m) / sigma
        _, s = shift_and_gate(x)
        return x, jnp.sum(jax.nn.log_sigmoid(s), -1)

    def sample(self, key, mean, log_var, num_samples: int, context=None):
        eps = D.normal(key, (num_samples, *mean.shape), mean.dtype)
        z0 = mean + jnp.exp(0.5 * log_var) * eps
        z, log_det = self(z0, context)
        return z, D.diag_gaussian_log_prob(z0, mean, log_var) - log_det

    def log_prob(self, z, mean, log_var, context):
        """log q(z | x) of z [..., B, D]: the flow inverted to z_0, then its base density less the steps'
        log-determinants (eq. 14)."""
        z0, log_det = self(z, context, inverse=True)
        return D.diag_gaussian_log_prob(z0, mean, log_var) - log_det


def context_size(posterior: Posterior | None) -> int:
    """The context vector's width that `posterior` wants from the encoder (0: none)."""
    return int(getattr(posterior, "context_dim", 0) or 0) if posterior is not None else 0


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


def sample(model, params, key, mean, log_var, num_samples: int, context=None) -> tuple[jax.Array, jax.Array]:
    """(z [K, B, D], log q [K, B]) from `model`'s posterior (`context`: the encoder's, for one that wants it)."""
    if model.posterior is None:
        return DiagonalGaussian(mean.shape[-1]).sample(key, mean, log_var, num_samples)
    return model.apply(params, key, mean, log_var, num_samples, context, method=model.posterior_sample)


def has_log_prob(model) -> bool:
    """Whether the model's posterior scores any z (`log_prob`), as the mutual information needs."""
    posterior = getattr(model, "posterior", None)
    return posterior is None or callable(getattr(posterior, "log_prob", None))


def analytic_kl(model, mean, log_var, context):
    """KL(q || p) [B] in closed form where the posterior has one against the model's prior (a full-
    covariance Gaussian against N(0, I)), else None (the objective then estimates it by Monte Carlo)."""
    from cvae_jax.core import priors

    posterior = getattr(model, "posterior", None)
    if isinstance(posterior, FullCovariance) and isinstance(model.prior, priors.StandardNormal):
        return posterior.kl_to_standard_normal(mean, log_var, context)
    return None


def encode_and_sample(model, params, key, x, condition, num_samples: int):
    """(z [K, B, D], log q [K, B], mean, log_var): the encoder run once, then K draws from the posterior."""
    mean, log_var, context = model.apply(params, x, condition, method=model.encode_full)
    return (*sample(model, params, key, mean, log_var, num_samples, context), mean, log_var)


register("diagonal_gaussian")(lambda cfg: DiagonalGaussian(cfg.latent_dim))
register("full_covariance")(lambda cfg: FullCovariance(cfg.latent_dim))
register("iaf")(lambda cfg: IAF(cfg.latent_dim, steps=cfg.iaf_steps, hidden=cfg.iaf_hidden))

__all__ = [
    "IAF",
    "DiagonalGaussian",
    "analytic_kl",
    "FullCovariance",
    "Posterior",
    "context_size",
    "encode_and_sample",
    "has_log_prob",
    "is_gaussian",
    "make",
    "names",
    "register",
    "sample",
]
