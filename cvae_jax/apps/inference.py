"""Using a trained model: encode, reconstruct, sample. Pure functions of (model, params, inputs, key)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.core import likelihoods


def one_hot(labels, num_classes: int) -> jax.Array:
    return jax.nn.one_hot(jnp.asarray(labels), num_classes, dtype=jnp.float32)


def check_labels(labels, num: int, num_classes: int, what: str) -> np.ndarray:
    """`labels` (an int, or [num] ints) as int32 [num], checked to lie in 0..num_classes-1; `what`
    names them in the error."""
    labels = np.broadcast_to(np.asarray(labels), (num,)) if np.ndim(labels) == 0 else np.asarray(labels)
    if labels.shape != (num,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{what} must be one integer or {num} integers (one per image), got shape {labels.shape} of {labels.dtype}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"{what} {labels.min()}..{labels.max()} out of range: this model knows classes 0..{num_classes - 1}"
        )
    return labels.astype(np.int32)


def condition_for(model, labels, num_classes: int, num: int) -> jax.Array | None:
    """The one-hot condition for a CVAE (labels: an int or [num] ints); None for a VAE."""
    if not model.conditional:
        if labels is not None:
            raise ValueError("an unconditional VAE takes no label; train a CVAE (--model cvae) to sample by class")
        return None
    if labels is None:
        raise ValueError("a CVAE needs labels to sample or decode; pass --label K")
    labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (num,))
    return one_hot(labels, num_classes)


def compiled_per_model(*static: int):
    """The decorated fn(model, ...) as one compiled program per model and input shapes, the model (and
    the arguments at positions `static`) compile-time constants; a model that cannot be hashed (a
    custom prior with, say, a list field) runs op by op instead, with the same values up to rounding.
    Op by op, a fresh process compiles every operation on its own, which is slower."""

    def wrap(fn):
        jitted = jax.jit(fn, static_argnums=(0, *static))

        @functools.wraps(fn)
        def call(model, *args, **kwargs):
            try:
                hash(model)
            except TypeError:
                return fn(model, *args, **kwargs)
            return jitted(model, *args, **kwargs)

        call.jitted = jitted
        return call

    return wrap


def own_methods(model) -> bool:
    """Whether `model` has no single Gaussian latent and brings its own `reconstruct` and `sample`: a
    hierarchical VAE (one latent per group) or a VQ-VAE (a grid of codes)."""
    return bool(getattr(model, "hierarchical", False) or getattr(model, "vector_quantized", False))


def _single_latent(model, what: str) -> None:
    if own_methods(model):
        raise ValueError(
            f"{what} needs a single-latent model: a hierarchical VAE (model.architecture=hvae) has one latent "
            "per group, a VQ-VAE a grid of codes; they sample and reconstruct, and report their ELBO and bits/dim"
        )


@compiled_per_model()
def encode(model, params, images, condition=None):
    """Posterior (mean, log_var) of q(z | x[, c])."""
    _single_latent(model, "encoding to one latent")
    return model.apply(params, images, condition, method=model.encode)


@compiled_per_model()
def decode_mean(model, params, z, condition=None) -> jax.Array:
    """The likelihood mean of p(x | z[, c]), in [0, 1]: [N, H, W, C]."""
    _single_latent(model, "decoding one latent")
    return likelihoods.mean(model.apply(params, z, condition, method=model.decode))


@compiled_per_model()
def reconstruct(model, params, images, condition=None) -> jax.Array:
    """Decodes the posterior mean of each image (of every group, for a hierarchical VAE; the nearest codes,
    for a VQ-VAE)."""
    if own_methods(model):
        return likelihoods.mean(model.apply(params, images, condition, method=model.reconstruct))
    mean, _ = encode(model, params, images, condition)
    return decode_mean(model, params, mean, condition)


@compiled_per_model(3)
def sample(model, params, key, num: int, condition=None) -> jax.Array:
    """Draws z from the model's prior p(z[ | c]) and returns the decoded likelihood means, [num, H, W, C]."""
    if own_methods(model):
        return likelihoods.mean(model.apply(params, key, num, condition, method=model.sample))
    z = model.apply(params, key, num, condition, method=model.prior_sample)
    return decode_mean(model, params, z, condition)
