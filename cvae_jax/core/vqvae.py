"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning"): a conv encoder to a
grid of vectors, each replaced by its nearest codebook entry, a conv decoder from the quantized grid.

* The codebook learns by exponential moving averages (the paper's appendix A.1): per code k, the
  assignment count N_k and the sum m_k of the encoder outputs assigned to it decay by `ema_decay` and
  take in each batch's, and e_k = m_k / N_k (N Laplace-smoothed, so that no code divides by zero).
  N and m live in the "codebook" collection; the objective hands the optimizer their new values
  through a gradient (`ema_gradient`) that `make_optimizer` applies as is, so that the update is part
  of the one compiled train step, its checkpoints and its resume.
* The encoder learns through the straight-through estimator and the commitment loss
  beta |z_e - sg(e)|^2; the decoder through the likelihood.
* Its bound with a uniform prior over codes is recon + (grid cells) log K; an autoregressive prior over
  the code grid (`cvae_jax.tasks.code_prior`) tightens it and samples.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.core import likelihoods
from cvae_jax.nn import layers

# The codebook's Laplace smoothing of the counts (as Sonnet's VectorQuantizerEMA).
EPSILON = 1e-5
# A code whose moving-average count falls below this restarts at a random encoder output (Jukebox's 1.0).
RESTART_BELOW = 1.0


class VQVAE(nn.Module):
    data_shape: tuple[int, int, int]
    code_dim: int = 16
    codebook_size: int = 64
    widths: Sequence[int] = (32, 64)  # encoder stages, each halving the grid (the decoder mirrors them)
    likelihood: str = "bernoulli"
    mixtures: int = 10
    gaussian_scale: float = 0.1
    ema_decay: float = 0.99
    commitment: float = 0.25  # beta of the commitment loss
    dtype: jnp.dtype = jnp.float32
    kernels: str = "flax"

    conditional = False
    vector_quantized = True
    prior = None

    def setup(self):
        layer = {"kernels": self.kernels, "dtype": self.dtype}
        self.down = [layers.conv(w, 3, 2, name=f"down_{i}", **layer) for i, w in enumerate(self.widths)]
        self.to_code = layers.conv(self.code_dim, 1, 1, name="to_code", **layer)
        self.from_code = layers.conv(self.widths[-1], 3, 1, name="from_code", **layer)
        ups = list(self.widths[::-1][1:]) + [self.widths[0]]
        self.up = [layers.conv_transpose(w, 3, 2, name=f"up_{i}", **layer) for i, w in enumerate(ups)]
        channels = self.data_shape[2] * likelihoods.outputs_per_dimension(self.likelihood, self.mixtures)
        self.out = layers.conv(channels, 3, 1, name="out", **layer)
        self.counts = self.variable("codebook", "counts", jnp.ones, (self.codebook_size,))
        self.sums = self.variable(
            "codebook", "sums", lambda: jax.random.normal(self.make_rng("params"), (self.codebook_size, self.code_dim))
        )

    @property
    def grid(self) -> tuple[int, int]:
        scale = 2 ** len(self.widths)
        return self.data_shape[0] // scale, self.data_shape[1] // scale

    def codebook(self) -> jax.Array:
        """[K, D] code vectors e_k = m_k / N_k, N Laplace-smoothed."""
        n = self.counts.value
        total = jnp.sum(n)
        smoothed = (n + EPSILON) / (total + self.codebook_size * EPSILON) * total
        return self.sums.value / smoothed[:, None]

    def encode_grid(self, x: jax.Array) -> jax.Array:
        """z_e [B, h, w, D]: the encoder's outputs, one vector per grid cell."""
        h = x.astype(self.dtype)
        for conv in self.down:
            h = nn.relu(conv(h))
        return self.to_code(h).astype(jnp.float32)

    def nearest(self, z_e: jax.Array) -> jax.Array:
        """int32 [B, h, w]: the index of each vector's nearest code (squared Euclidean distance)."""
        e = self.codebook()
        distance = jnp.sum(z_e**2, -1, keepdims=True) - 2.0 * z_e @ e.T + jnp.sum(e**2, -1)
        return jnp.argmin(distance, -1).astype(jnp.int32)

    def decode_grid(self, z_q: jax.Array) -> dict:
        """Likelihood parameters from a grid of code vectors [B, h, w, D]."""
        h = nn.relu(self.from_code(z_q.astype(self.dtype)))
        for conv in self.up:
            h = nn.relu(conv(h))
        out = self.out(h).astype(jnp.float32)
        log_scale = jnp.full(self.data_shape, math.log(self.gaussian_scale)) if self.likelihood == "gaussian" else None
        return likelihoods.from_decoder(out, self.likelihood, self.mixtures, log_scale)

    def decode_codes(self, codes: jax.Array) -> dict:
        """Likelihood parameters from code indices int [B, h, w]."""
        return self.decode_grid(self.codebook()[codes])

    def reconstruct(self, x: jax.Array, condition=None) -> dict:
        """Likelihood parameters of each image's nearest codes."""
        del condition
        return self.decode_codes(self.nearest(self.encode_grid(x)))

    def sample(self, key: jax.Array, num: int, condition=None) -> dict:
        """Likelihood parameters of `num` grids of codes drawn uniformly: the generative model whose
        bound the uniform-prior ELBO is (a learned prior over the codes draws better ones)."""
        del condition
        return self.decode_codes(jax.random.randint(key, (num, *self.grid), 0, self.codebook_size))

    def __call__(self, x: jax.Array, condition=None):
        return self.reconstruct(x, condition)


def ema_targets(model: VQVAE, variables, z_e: jax.Array, codes: jax.Array, key: jax.Array) -> dict:
    """The codebook collection after one EMA step on this batch: N <- g N + (1 - g) n, m <- g m + (1 - g) s,
    n_k the batch's assignments to code k and s_k the sum of the encoder outputs assigned to it. A code
    whose count falls below RESTART_BELOW restarts at one of the batch's encoder outputs, drawn at
    random (dead-code restarts, as Jukebox's, Dhariwal et al. 2020), so that every code stays in use."""
    one_hot = jax.nn.one_hot(codes.reshape(-1), model.codebook_size, dtype=jnp.float32)
    flat = jax.lax.stop_gradient(z_e.reshape(-1, z_e.shape[-1]))
    g, book = model.ema_decay, variables["codebook"]
    counts = g * book["counts"] + (1.0 - g) * jnp.sum(one_hot, 0)
    sums = g * book["sums"] + (1.0 - g) * one_hot.T @ flat
    dead = counts < RESTART_BELOW
    picks = flat[jax.random.randint(key, (model.codebook_size,), 0, flat.shape[0])]
    return {"counts": jnp.where(dead, 1.0, counts), "sums": jnp.where(dead[:, None], picks, sums)}


def ema_gradient(current: dict, target: dict) -> jax.Array:
    """A term whose value is 0 and whose gradient with respect to each codebook array v is v - target:
    the optimizer's "codebook" branch applies minus the gradient, so v becomes its target."""
    return sum(
        jnp.sum(jax.lax.stop_gradient(current[k] - target[k]) * (current[k] - jax.lax.stop_gradient(current[k])))
        for k in current
    )


def usage(codes: jax.Array, codebook_size: int) -> tuple[jax.Array, jax.Array]:
    """(perplexity, dead codes) of a batch's code indices: exp of the entropy of the codes' frequencies
    (K when every code is used alike, 1 when one is), and how many codes it never used."""
    freq = jnp.mean(jax.nn.one_hot(codes.reshape(-1), codebook_size, dtype=jnp.float32), 0)
    entropy = -jnp.sum(jnp.where(freq > 0, freq * jnp.log(jnp.where(freq > 0, freq, 1.0)), 0.0))
    return jnp.exp(entropy), jnp.sum(freq == 0).astype(jnp.float32)
