"""The layers model code uses, from one of two backends chosen by `model.kernels`:

* ``flax``: stock `flax.linen` Dense, Conv and ConvTranspose;
* ``tuned``: `cvae_jax.nn.tuned`'s convolutions, the same parameters (names, shapes, initial values)
  with custom gradients written for XLA:CPU; checkpoints are interchangeable between the two. Dense
  layers are flax's in both (the tuned dense kernels no longer paid and were deleted);
* ``auto`` (the default): tuned on the CPU backend, flax everywhere else.

benchmarks/RESULTS.md ("Kernels") measures, on the current jax, whether tuned still pays per model.
"""

from __future__ import annotations

import typing

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.config import Kernels
from cvae_jax.nn import tuned

KERNELS = typing.get_args(Kernels)  # config.Kernels: the one list of the allowed values


def resolve(kernels: str) -> str:
    """ "flax" or "tuned" for a `model.kernels` value ("auto": tuned on CPU only)."""
    if kernels not in KERNELS:
        raise ValueError(f"model.kernels must be one of {KERNELS}, got {kernels!r}")
    if kernels == "auto":
        return "tuned" if jax.default_backend() == "cpu" else "flax"
    return kernels


def dense(features: int, *, kernels: str, dtype, name: str | None = None) -> nn.Module:
    del kernels  # the same layer in both backends
    return nn.Dense(features, dtype=dtype, name=name)


def conv(features: int, kernel_size: int, stride: int, *, kernels: str, dtype, name: str | None = None) -> nn.Module:
    """A "SAME" 2-D convolution with a square kernel and equal strides (NHWC)."""
    if resolve(kernels) == "tuned":
        return tuned.Conv(features, kernel_size, stride, dtype=dtype, name=name)
    return nn.Conv(
        features, (kernel_size, kernel_size), strides=(stride, stride), padding="SAME", dtype=dtype, name=name
    )


def conv_transpose(
    features: int, kernel_size: int, stride: int, *, kernels: str, dtype, name: str | None = None
) -> nn.Module:
    """A "SAME" 2-D transposed convolution with a square kernel and equal strides (NHWC)."""
    if resolve(kernels) == "tuned":
        return tuned.ConvTranspose(features, kernel_size, stride, dtype=dtype, name=name)
    return nn.ConvTranspose(
        features, (kernel_size, kernel_size), strides=(stride, stride), padding="SAME", dtype=dtype, name=name
    )


def upsample2(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, 2H, 2W, C], each value repeated over a 2 x 2 block (nearest-neighbour): a
    broadcast and a reshape, whose gradient is a sum over each block, where jax.image.resize's
    nearest mode gathers, and its gradient scatters."""
    b, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


def posterior_head(h: jax.Array, latent_dim: int, context_dim: int, layer: dict) -> tuple:
    """An encoder's last layers on features h: (mean, log_var) in float32, and, when context_dim > 0, the
    posterior's context vector (e.g. IAF's h). Called inside the encoder, whose parameters they are."""
    mean = dense(latent_dim, name="mean", **layer)(h)
    log_var = dense(latent_dim, name="log_var", **layer)(h)
    out = (mean.astype(jnp.float32), log_var.astype(jnp.float32))
    if context_dim:
        out += (dense(context_dim, name="context", **layer)(h).astype(jnp.float32),)
    return out
