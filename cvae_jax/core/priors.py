"""Priors p(z) (or p(z | c)): the extension point.

A prior is a Flax module with a small surface:

    log_prob(z, condition=None) -> [B]        log-density, summed over latent dimensions
    sample(key, num, condition=None) -> [num, latent_dim]
    kl(mean, log_var, condition=None) -> [B]  optional: analytic KL(q || p) for a diagonal Gaussian q

Its parameters live in the model's parameter tree under "prior" and are trained jointly with the
encoder and decoder. When a prior defines `kl`, the objective uses it; otherwise it uses the Monte
Carlo estimate log q(z | x) - log p(z) at the sampled z (decided automatically, see `has_analytic_kl`).

A prior that needs the encoder (VampPrior) sets `needs_encoder = True` and receives it as `encoder=`.

Add your own without editing the library::

    @priors.register("laplace")
    def make_laplace(cfg, data_shape, num_classes):
        return MyLaplacePrior(latent_dim=cfg.latent_dim)

then `--set model.prior=laplace` (after importing your module) or pass `prior=` to `build_model`.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.core import distributions as D
from cvae_jax.core.registry import Registry


class Prior(nn.Module):
    """Base class: subclasses implement `log_prob` and `sample` (and may implement `kl`)."""

    latent_dim: int
    needs_encoder = False
    conditional = False

    def log_prob(self, z, condition=None, encoder=None):
        raise NotImplementedError

    def sample(self, key, num: int, condition=None, encoder=None):
        raise NotImplementedError

    def __call__(self, z, condition=None, encoder=None):
        return self.log_prob(z, condition, encoder)


def has_analytic_kl(prior: Prior) -> bool:
    return callable(getattr(type(prior), "kl", None))


class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    def log_prob(self, z, condition=None, encoder=None):
        return D.standard_normal_log_prob(z)

    def sample(self, key, num, condition=None, encoder=None):
        return jax.random.normal(key, (num, self.latent_dim))

    def kl(self, mean, log_var, condition=None, encoder=None):
        return D.kl_to_standard_normal(mean, log_var)


class LearnedGaussian(Prior):
    """p(z) = N(mu, diag exp(log_var)) with trainable mu and log_var."""

    def setup(self):
        self.mean = self.param("mean", nn.initializers.zeros, (self.latent_dim,))
        self.log_var = self.param("log_var", nn.initializers.zeros, (self.latent_dim,))

    def _params(self):
        return self.mean, self.log_var

    def log_prob(self, z, condition=None, encoder=None):
        mean, log_var = self._params()
        return D.diag_gaussian_log_prob(z, mean, log_var)

    def sample(self, key, num, condition=None, encoder=None):
        mean, log_var = self._params()
        return D.sample_diag_gaussian(
            key, jnp.broadcast_to(mean, (num, self.latent_dim)), jnp.broadcast_to(log_var, (num, self.latent_dim))
        )

    def kl(self, mean, log_var, condition=None, encoder=None):
        p_mean, p_log_var = self._params()
        return D.kl_diag_gaussians(mean, log_var, p_mean, p_log_var)


def _mixture_log_prob(z, means, log_vars, logits):
    """log sum_k pi_k N(z | means[k], diag exp(log_vars[k])); means [K, D] (or [B, K, D])."""
    comp = D.diag_gaussian_log_prob(z[..., None, :], means, log_vars)  # [B, K]
    return jax.nn.logsumexp(comp + jax.nn.log_softmax(logits, axis=-1), axis=-1)


def _mixture_sample(key, means, log_vars, logits, num):
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.categorical(k_comp, logits, shape=(num,))
    return D.sample_diag_gaussian(k_noise, means[comp], log_vars[comp])


class MixtureOfGaussians(Prior):
    """p(z) = sum_k pi_k N(mu_k, diag var_k), all trainable (means spread at initialization)."""

    num_components: int = 10

    def setup(self):
        self.means = self.param("means", nn.initializers.normal(1.0), (self.num_components, self.latent_dim))
        self.log_vars = self.param("log_vars", nn.initializers.zeros, (self.num_components, self.latent_dim))
        self.logits = self.param("logits", nn.initializers.zeros, (self.num_components,))

    def _params(self):
        return self.means, self.log_vars, self.logits

    def log_prob(self, z, condition=None, encoder=None):
        return _mixture_log_prob(z, *self._params())

    def sample(self, key, num, condition=None, encoder=None):
        return _mixture_sample(key, *self._params(), num)


class VampPrior(Prior):
    """VampPrior (Tomczak & Welling 2018): p(z) = 1/K sum_k q(z | u_k), learnable pseudo-inputs u_k."""

    data_shape: tuple[int, int, int] = (28, 28, 1)
    num_components: int = 50
    needs_encoder = True

    def setup(self):
        # Pseudo-inputs live in logit space so that sigmoid(u) stays a valid [0, 1] image.
        self.pseudo_inputs = self.param(
            "pseudo_inputs", nn.initializers.normal(0.5), (self.num_components, *self.data_shape)
        )

    def _components(self, encoder, condition):
        if encoder is None:
            raise ValueError("VampPrior needs the encoder: call it through the model (model.prior_log_prob)")
        return encoder(jax.nn.sigmoid(self.pseudo_inputs), condition)

    def log_prob(self, z, condition=None, encoder=None):
        means, log_vars = self._components(encoder, None)
        return _mixture_log_prob(z, means, log_vars, jnp.zeros(self.num_components))

    def sample(self, key, num, condition=None, encoder=None):
        means, log_vars = self._components(encoder, None)
        return _mixture_sample(key, means, log_vars, jnp.zeros(self.num_components), num)


class ConditionalGaussian(Prior):
    """p(z | c) = N(mu(c), diag exp(log_var(c))): the prior network of Sohn et al. (2015)."""

    hidden: int = 128
    conditional = True

    def setup(self):
        self.hidden_layer = nn.Dense(self.hidden)
        self.mean_layer = nn.Dense(self.latent_dim)
        self.log_var_layer = nn.Dense(self.latent_dim)

    def _params(self, condition):
        if condition is None:
            raise ValueError("the conditional prior needs a condition (model.kind=cvae)")
        h = nn.relu(self.hidden_layer(condition))
        return self.mean_layer(h), self.log_var_layer(h)

    def log_prob(self, z, condition=None, encoder=None):
        mean, log_var = self._params(condition)
        return D.diag_gaussian_log_prob(z, mean, log_var)

    def sample(self, key, num, condition=None, encoder=None):
        mean, log_var = self._params(condition)
        return D.sample_diag_gaussian(
            key, jnp.broadcast_to(mean, (num, self.latent_dim)), jnp.broadcast_to(log_var, (num, self.latent_dim))
        )

    def kl(self, mean, log_var, condition=None, encoder=None):
        p_mean, p_log_var = self._params(condition)
        return D.kl_diag_gaussians(mean, log_var, p_mean, p_log_var)


class _Coupling(nn.Module):
    """An affine coupling layer (RealNVP, Dinh et al. 2017) on the dimensions where mask == 0."""

    mask: tuple[int, ...]
    hidden: int = 64

    def setup(self):
        self.net = [
            nn.Dense(self.hidden),
            nn.Dense(self.hidden),
            nn.Dense(2 * len(self.mask), kernel_init=nn.initializers.zeros),
        ]

    def _shift_log_scale(self, z_masked):
        h = nn.relu(self.net[0](z_masked))
        h = nn.relu(self.net[1](h))
        out = self.net[2](h)
        shift, log_scale = jnp.split(out, 2, axis=-1)
        return shift, jnp.tanh(log_scale)  # bounded scales keep the flow stable

    def inverse(self, z):
        """x -> u direction used for the density: returns (u, log|det du/dz|)."""
        mask = jnp.asarray(self.mask, z.dtype)
        shift, log_scale = self._shift_log_scale(z * mask)
        u = z * mask + (1 - mask) * (z - shift) * jnp.exp(-log_scale)
        return u, -jnp.sum((1 - mask) * log_scale, axis=-1)

    def forward(self, u):
        mask = jnp.asarray(self.mask, u.dtype)
        shift, log_scale = self._shift_log_scale(u * mask)
        return u * mask + (1 - mask) * (u * jnp.exp(log_scale) + shift)


class RealNVPPrior(Prior):
    """A normalizing-flow prior: z = f(u), u ~ N(0, I), f a stack of RealNVP affine couplings."""

    num_layers: int = 4
    hidden: int = 64

    def setup(self):
        masks = [tuple(int((i + layer) % 2 == 0) for i in range(self.latent_dim)) for layer in range(self.num_layers)]
        self.layers = [_Coupling(mask=m, hidden=self.hidden) for m in masks]

    def log_prob(self, z, condition=None, encoder=None):
        log_det = jnp.zeros(z.shape[:-1])
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z)
            log_det = log_det + ld
        return D.standard_normal_log_prob(z) + log_det

    def sample(self, key, num, condition=None, encoder=None):
        u = jax.random.normal(key, (num, self.latent_dim))
        for layer in self.layers:
            u = layer.forward(u)
        return u


# ---------------------------------------------------------------- registry: name -> factory(cfg, shape, classes)
Factory = Callable[..., Prior]
REGISTRY: Registry[Factory] = Registry("prior", "model.prior", "cvae_jax.core.priors")
register = REGISTRY.register  # decorator: registers `factory(model_cfg, data_shape, num_classes) -> Prior`
names = REGISTRY.names


def make(name: str, cfg, data_shape, num_classes: int) -> Prior:
    return REGISTRY.get(name)(cfg, tuple(data_shape), num_classes)


register("standard_normal")(lambda cfg, shape, k: StandardNormal(cfg.latent_dim))
register("learned_gaussian")(lambda cfg, shape, k: LearnedGaussian(cfg.latent_dim))
register("mixture")(lambda cfg, shape, k: MixtureOfGaussians(cfg.latent_dim, num_components=cfg.prior_components))
register("vamp")(lambda cfg, shape, k: VampPrior(cfg.latent_dim, data_shape=shape, num_components=cfg.prior_components))
register("conditional")(lambda cfg, shape, k: ConditionalGaussian(cfg.latent_dim))
register("flow")(lambda cfg, shape, k: RealNVPPrior(cfg.latent_dim, num_layers=cfg.flow_layers))

__all__ = [
    "ConditionalGaussian",
    "LearnedGaussian",
    "MixtureOfGaussians",
    "Prior",
    "RealNVPPrior",
    "StandardNormal",
    "VampPrior",
    "has_analytic_kl",
    "make",
    "names",
    "register",
]
