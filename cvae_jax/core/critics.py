"""Modules an objective trains beside the VAE on its latents, and what they are trained on.

* `Discriminator`: FactorVAE's (Kim & Mnih 2018, appendix): dense layers with leaky ReLU (slope 0.2)
  and two logits, "z drawn from q(z)" against "z from the product of its marginals";
* `permute_dims`: samples of the product of the marginals from a batch of q(z) samples, each latent
  dimension permuted across the batch independently (their algorithm 1).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax


class Discriminator(nn.Module):
    hidden: Sequence[int] = (1000, 1000, 1000, 1000, 1000, 1000)

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = z
        for width in self.hidden:
            h = nn.leaky_relu(nn.Dense(width)(h), 0.2)
        return nn.Dense(2)(h)


def permute_dims(key: jax.Array, z: jax.Array) -> jax.Array:
    """z [B, D] with each column shuffled by its own random permutation of the B rows."""
    keys = jax.random.split(key, z.shape[1])
    return jax.vmap(lambda k, column: jax.random.permutation(k, column), in_axes=(0, 1), out_axes=1)(keys, z)


def is_critic_path(path) -> bool:
    """Whether a parameter's tree path lies under a "critic" entry."""
    return any(getattr(entry, "key", None) == "critic" for entry in path)


def freeze(params):
    """`params` with the critic's parameters behind stop_gradient: the VAE's loss then trains the VAE only."""
    return jax.tree_util.tree_map_with_path(lambda p, x: jax.lax.stop_gradient(x) if is_critic_path(p) else x, params)


def cross_entropy(logits: jax.Array, label: int) -> jax.Array:
    """Per-example cross-entropy of two-class logits [B, 2] against one class for the whole batch."""
    return -jax.nn.log_softmax(logits)[:, label]


__all__ = ["Discriminator", "cross_entropy", "freeze", "is_critic_path", "permute_dims"]
