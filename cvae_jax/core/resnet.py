"""Residual convolutional encoder and decoder for images of any [H, W, C] (model.architecture=resnet),
with the same interface as the MLP ones: encode -> (mean, log_var), decode -> likelihood parameters.

  encoder: 3x3 stem -> per stage: `blocks` residual blocks, then a stride-2 3x3 conv to the next
           stage's width -> flatten -> [condition] -> dense mean, log_var
  decoder: [z, c] -> dense to the smallest grid -> per stage (widest first): residual blocks, then
           nearest-neighbour 2x upsampling and a 3x3 conv to the next width -> 3x3 conv to the
           likelihood's parameters

A residual block is x + g * conv3x3(silu(conv3x3(silu(x)))), with g a learned scalar that starts at
0 (ReZero, Bachlechner et al. 2020): every block starts as the identity, which keeps deep stacks
trainable without normalization layers (whose batch statistics would couple a VAE's examples).
With `remat`, each block's activations are recomputed in the backward pass (jax.checkpoint) instead
of stored: less memory for more compute.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.core import likelihoods
from cvae_jax.nn import layers


class ResBlock(nn.Module):
    width: int
    dtype: jnp.dtype = jnp.float32
    kernels: str = "flax"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = layers.conv(self.width, 3, 1, kernels=self.kernels, dtype=self.dtype)(nn.silu(x))
        h = layers.conv(self.width, 3, 1, kernels=self.kernels, dtype=self.dtype)(nn.silu(h))
        gate = self.param("gate", nn.initializers.zeros, ())
        return x + gate.astype(h.dtype) * h


def _block(remat: bool):
    """ResBlock, or its rematerialized form (named alike, so that checkpoints of either load in both)."""
    return nn.remat(ResBlock) if remat else ResBlock


def smallest_grid(data_shape: Sequence[int], stages: int) -> tuple[int, int]:
    scale = 2 ** (stages - 1)
    return data_shape[0] // scale, data_shape[1] // scale


class ResNetEncoder(nn.Module):
    latent_dim: int
    widths: Sequence[int] = (64, 128, 256)
    blocks: int = 2
    remat: bool = False
    dtype: jnp.dtype = jnp.float32
    kernels: str = "flax"
    context_dim: int = 0  # > 0: also a context vector for the posterior (e.g. IAF's h)

    @nn.compact
    def __call__(self, x: jax.Array, condition: jax.Array | None = None):
        layer = {"kernels": self.kernels, "dtype": self.dtype}
        h = layers.conv(self.widths[0], 3, 1, name="stem", **layer)(x.astype(self.dtype))
        for stage, width in enumerate(self.widths):
            for i in range(self.blocks):
                h = _block(self.remat)(width, name=f"block_{stage}_{i}", **layer)(h)
            if stage + 1 < len(self.widths):
                h = layers.conv(self.widths[stage + 1], 3, 2, name=f"down_{stage}", **layer)(nn.silu(h))
        h = nn.silu(h).reshape(h.shape[0], -1)
        if condition is not None:
            h = jnp.concatenate([h, condition.astype(h.dtype)], axis=-1)
        return layers.posterior_head(h, self.latent_dim, self.context_dim, layer)


class ResNetDecoder(nn.Module):
    data_shape: tuple[int, int, int]
    widths: Sequence[int] = (64, 128, 256)
    blocks: int = 2
    remat: bool = False
    likelihood: str = "discretized_logistic"
    mixtures: int = 10
    gaussian_scale: float = 0.1
    dtype: jnp.dtype = jnp.float32
    kernels: str = "flax"

    @nn.compact
    def __call__(self, z: jax.Array, condition: jax.Array | None = None):
        layer = {"kernels": self.kernels, "dtype": self.dtype}
        height, width = smallest_grid(self.data_shape, len(self.widths))
        h = z if condition is None else jnp.concatenate([z, condition.astype(z.dtype)], axis=-1)
        h = layers.dense(height * width * self.widths[-1], name="to_grid", **layer)(h.astype(self.dtype))
        h = h.reshape(h.shape[0], height, width, self.widths[-1])
        for stage in reversed(range(len(self.widths))):
            for i in range(self.blocks):
                h = _block(self.remat)(self.widths[stage], name=f"block_{stage}_{i}", **layer)(h)
            if stage > 0:
                h = layers.upsample2(h)
                h = layers.conv(self.widths[stage - 1], 3, 1, name=f"up_{stage}", **layer)(h)
        outputs = self.data_shape[2] * likelihoods.outputs_per_dimension(self.likelihood, self.mixtures)
        out = layers.conv(outputs, 3, 1, name="out", **layer)(nn.silu(h)).astype(jnp.float32)
        log_scale = jnp.full(self.data_shape, jnp.log(self.gaussian_scale), jnp.float32)
        return likelihoods.from_decoder(out, self.likelihood, self.mixtures, log_scale)
