"""Translation and style swap with a trained CVAE: encode under one condition, decode under another.

With a CVAE, z carries what the condition does not: for digits, the handwriting (stroke width,
slant, size). So decoding an image's latent under another label redraws it as another digit in
the same hand, and decoding image A's latent under image B's label puts A's style on B's digit.
Pure functions of (model, params, inputs); images are float [N, H, W, C] in [0, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.apps import inference


def _require_cvae(model) -> None:
    if not model.conditional:
        raise ValueError(
            "translation and style swap need a CVAE (train with --model cvae): an unconditional "
            "VAE has no condition to change"
        )


def latent_means(model, params, images, labels, num_classes: int) -> jax.Array:
    """Posterior means E_q[z | x, c] of `images` under their `labels`: [N, latent_dim]."""
    _require_cvae(model)
    labels = inference.check_labels(labels, len(images), num_classes, "labels")
    mean, _ = inference.encode(model, params, jnp.asarray(images, jnp.float32), inference.one_hot(labels, num_classes))
    return mean


def decode_as(model, params, z, labels, num_classes: int) -> jax.Array:
    """The likelihood means of latents `z` decoded under `labels`: [N, H, W, C]."""
    labels = inference.check_labels(labels, len(z), num_classes, "target labels")
    return inference.decode_mean(model, params, z, inference.one_hot(labels, num_classes))


def translate(model, params, images, source_labels, target_labels, num_classes: int) -> jax.Array:
    """Each image, encoded under its source label and decoded under its target label."""
    z = latent_means(model, params, images, source_labels, num_classes)
    return decode_as(model, params, z, target_labels, num_classes)


def style_swap(model, params, style_images, style_labels, content_labels, num_classes: int) -> jax.Array:
    """Row i: the handwriting of style_images[i] writing class content_labels[i] — the latent of one
    image, the condition of another (pass the other image's label, or a classifier's guess at it)."""
    return translate(model, params, style_images, style_labels, content_labels, num_classes)


def translation_grid(model, params, images, labels, num_classes: int) -> jax.Array:
    """[N, num_classes, H, W, C]: every image translated to every class (a picture's rows and columns)."""
    z = latent_means(model, params, images, labels, num_classes)
    n = len(images)
    targets = np.tile(np.arange(num_classes), n)
    out = decode_as(model, params, jnp.repeat(z, num_classes, axis=0), targets, num_classes)
    return out.reshape(n, num_classes, *out.shape[1:])


def cycle_distances(
    model, params, images, source_labels, target_labels, num_classes: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Style preservation, measured in latent space: (cycle, random), both [N].

    cycle[i]  = |z_i - z'_i|: z_i encodes image i under its source label, z'_i re-encodes its
                translation under the target label. Small when the translation kept the style.
    random[i] = |z_i - z_j| for a random other image j: the scale to compare with."""
    z = latent_means(model, params, images, source_labels, num_classes)
    moved = decode_as(model, params, z, target_labels, num_classes)
    z_back = latent_means(model, params, moved, target_labels, num_classes)
    cycle = np.linalg.norm(np.asarray(z - z_back), axis=1)
    n = len(images)
    shift = np.random.default_rng(seed).integers(1, n, size=n) if n > 1 else np.zeros(1, int)
    other = (np.arange(n) + shift) % n
    random = np.linalg.norm(np.asarray(z - z[other]), axis=1)
    return cycle, random
