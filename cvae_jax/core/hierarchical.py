"""A hierarchical top-down VAE in the style of VDVAE (Child 2021) and NVAE (Vahdat & Kautz 2020),
model.architecture=hvae: a few groups of spatial latents at several resolutions, each with a
prior conditioned on the groups above it.

  bottom-up:  stem -> per resolution (finest first): residual blocks, keep the activation a_r, then
              downsample to the next resolution
  top-down:   h = a learned constant at the coarsest resolution (+ the condition, CVAE); per
              resolution (coarsest first), `groups_per_stage` times:
                  prior     p(z_i | z_<i)    = N(mu_p, sigma_p) from conv(h)
                  posterior q(z_i | x, z_<i) = N(mu_q, sigma_q) from conv([h, a_r])
                  h <- h + conv1x1(z_i) + conv(h) features; a residual block
              then upsample; finally a 3x3 conv to the likelihood's parameters
  ELBO:       log p(x | z) - sum_i KL(q(z_i | x, z_<i) || p(z_i | z_<i)), each KL analytic given the
              sampled z_<i, in nats per image; bits/dim for 8-bit likelihoods.

It has its own ELBO (`elbo`), sampler (`sample`) and reconstruction (`reconstruct`): the single-latent
tools (importance-sampled NLL, active units, translation, the library's priors) do not apply, and the
config refuses them. The condition (CVAE) enters as a learned bias of h at every resolution and as
extra input channels of the bottom-up pass.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.core import distributions as D
from cvae_jax.core import likelihoods
from cvae_jax.core.resnet import ResBlock, _block
from cvae_jax.nn import layers


class HierarchicalVAE(nn.Module):
    data_shape: tuple[int, int, int]
    widths: Sequence[int] = (64, 128, 256)  # channels per resolution, finest first
    blocks: int = 1  # residual blocks per resolution in the bottom-up pass
    groups_per_stage: int = 2  # stochastic groups per resolution in the top-down pass
    latent_channels: int = 16  # channels of each group's z
    likelihood: str = "discretized_logistic"
    mixtures: int = 10
    gaussian_scale: float = 0.1
    condition_dim: int = 0
    remat: bool = False
    dtype: jnp.dtype = jnp.float32
    kernels: str = "flax"

    hierarchical = True

    @property
    def conditional(self) -> bool:
        return self.condition_dim > 0

    def setup(self):
        layer = {"kernels": self.kernels, "dtype": self.dtype}
        block = _block(self.remat)
        stages = len(self.widths)
        self.stem = layers.conv(self.widths[0], 3, 1, name="stem", **layer)
        self.up_blocks = [
            [block(w, name=f"enc_{r}_{i}", **layer) for i in range(self.blocks)] for r, w in enumerate(self.widths)
        ]
        self.downs = [layers.conv(self.widths[r + 1], 3, 2, name=f"down_{r}", **layer) for r in range(stages - 1)]
        coarsest = self.data_shape[0] // 2 ** (stages - 1), self.data_shape[1] // 2 ** (stages - 1)
        self.top = self.param("top", nn.initializers.zeros, (*coarsest, self.widths[-1]))
        if self.conditional:
            self.condition_bias = [nn.Dense(w, name=f"condition_{r}") for r, w in enumerate(self.widths)]
        priors, posteriors, projections, blocks = [], [], [], []
        for r in self._resolutions():
            w, name = self.widths[r], f"group_{len(priors)}_at_{r}"
            priors.append(layers.conv(2 * self.latent_channels + w, 3, 1, name=f"{name}_prior", **layer))
            posteriors.append(layers.conv(2 * self.latent_channels, 3, 1, name=f"{name}_posterior", **layer))
            projections.append(layers.conv(w, 1, 1, name=f"{name}_z", **layer))
            blocks.append(block(w, name=f"{name}_block", **layer))
        self.priors, self.posteriors, self.projections, self.group_blocks = priors, posteriors, projections, blocks
        # ups[r - 1] takes resolution r to the finer r - 1
        self.ups = [layers.conv(self.widths[r - 1], 3, 1, name=f"up_{r}", **layer) for r in range(1, stages)]
        outputs = self.data_shape[2] * likelihoods.outputs_per_dimension(self.likelihood, self.mixtures)
        self.out = layers.conv(outputs, 3, 1, name="out", **layer)

    def _resolutions(self) -> list[int]:
        """The resolution index of each stochastic group, top-down (coarsest first)."""
        return [r for r in reversed(range(len(self.widths))) for _ in range(self.groups_per_stage)]

    # ------------------------------------------------------------------ the two passes

    def _bottom_up(self, x, condition):
        h = x.astype(self.dtype)
        if condition is not None:
            planes = jnp.broadcast_to(condition[:, None, None, :], (*x.shape[:3], condition.shape[-1]))
            h = jnp.concatenate([h, planes.astype(self.dtype)], axis=-1)
        h = self.stem(h)
        acts = []
        for r, blocks in enumerate(self.up_blocks):
            for block in blocks:
                h = block(h)
            acts.append(h)
            if r < len(self.downs):
                h = self.downs[r](nn.silu(h))
        return acts

    def _top_down(self, batch: int, condition, key, acts=None, use_mean: bool = False):
        """Runs the top-down pass. With bottom-up activations `acts`: z from the posteriors (their means
        with use_mean) and the KL of each group; without: z from the priors. Returns (likelihood
        parameters, KL [B] summed over groups)."""
        h = jnp.broadcast_to(self.top.astype(self.dtype), (batch, *self.top.shape))
        kl = jnp.zeros((batch,), jnp.float32)
        resolution = len(self.widths) - 1
        h = self._with_condition(h, condition, resolution)
        for i, r in enumerate(self._resolutions()):
            if r != resolution:  # up to the next (finer) resolution
                h = self.ups[resolution - 1](layers.upsample2(h))
                resolution = r
                h = self._with_condition(h, condition, r)
            prior = self.priors[i](nn.silu(h)).astype(jnp.float32)
            p_mean, p_log_var = (
                prior[..., : self.latent_channels],
                prior[..., self.latent_channels : 2 * self.latent_channels],
            )
            features = prior[..., 2 * self.latent_channels :].astype(self.dtype)
            eps = D.normal(jax.random.fold_in(key, i), p_mean.shape)
            if acts is None:
                z = p_mean + jnp.exp(0.5 * p_log_var) * eps
            else:
                post = self.posteriors[i](nn.silu(jnp.concatenate([h, acts[r]], axis=-1))).astype(jnp.float32)
                q_mean, q_log_var = post[..., : self.latent_channels], post[..., self.latent_channels :]
                z = q_mean if use_mean else q_mean + jnp.exp(0.5 * q_log_var) * eps
                kl = kl + jnp.sum(D.kl_diag_gaussians(q_mean, q_log_var, p_mean, p_log_var).reshape(batch, -1), axis=1)
            h = h + features + self.projections[i](z.astype(self.dtype))
            h = self.group_blocks[i](h)
        out = self.out(nn.silu(h)).astype(jnp.float32)
        log_scale = jnp.full(self.data_shape, math.log(self.gaussian_scale), jnp.float32)
        return likelihoods.from_decoder(out, self.likelihood, self.mixtures, log_scale), kl

    def _with_condition(self, h, condition, resolution: int):
        if condition is None:
            return h
        return h + self.condition_bias[resolution](condition).astype(h.dtype)[:, None, None, :]

    # ------------------------------------------------------------------ what the library calls

    def _check(self, x, condition):
        if x is not None and tuple(x.shape[1:]) != tuple(self.data_shape):
            raise ValueError(f"images must have shape [N, {', '.join(map(str, self.data_shape))}], got {x.shape}")
        if (condition is not None) != self.conditional:
            raise ValueError("a conditional HVAE needs a condition; an unconditional one takes none")

    def elbo(self, x, condition, key):
        """(reconstruction -log p(x | z) [B], KL summed over the groups [B]) with z ~ q."""
        self._check(x, condition)
        params, kl = self._top_down(x.shape[0], condition, key, acts=self._bottom_up(x, condition))
        return -likelihoods.log_likelihood(x, params), kl

    def sample(self, key, num: int, condition=None):
        """Likelihood parameters of `num` images drawn top-down from the priors."""
        self._check(None, condition)
        return self._top_down(num, condition, key)[0]

    def reconstruct(self, x, condition=None):
        """Likelihood parameters of x decoded from the posterior means of every group."""
        self._check(x, condition)
        return self._top_down(x.shape[0], condition, jax.random.key(0), self._bottom_up(x, condition), True)[0]

    def __call__(self, x, condition=None):
        return self.elbo(x, condition, jax.random.key(0))


__all__ = ["HierarchicalVAE", "ResBlock"]
