"""The benchmarked models, as cvae_jax configs, and their training FLOPs counted from the model.

article-vae  784-256 -> latent 2 -> 256-784 (the article's VAE)
article-cvae Conv2D 32 3x3 -> Dense 64 -> + one-hot -> latent 2; z + label -> 64 -> 784 (the article's CVAE)
mlp-vae      784-512-512 -> latent 32 -> 512-512-784
conv-vae     Conv 32, 64 (stride 2) -> Dense 256 -> latent 16 -> Dense 256 -> ConvT 64, 32 -> 28x28
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from cvae_jax.config import Config, apply_overrides, get_config

IMAGE_SHAPE, NUM_CLASSES = (28, 28, 1), 10

MODELS: dict[str, tuple[str, str, list[str]]] = {
    "article-vae": ("vae", "article", []),
    "article-cvae": ("cvae", "article", []),
    "cvae": ("cvae", "default", []),  # the default CVAE (the README's main job)
    "mlp-vae": (
        "vae",
        "default",
        ["model.latent_dim=32", "model.encoder_hidden=512,512", "model.decoder_hidden=512,512"],
    ),
    "conv-vae": (
        "vae",
        "default",
        [
            "model.latent_dim=16",
            "model.encoder_conv=32,64",
            "model.encoder_hidden=256",
            "model.decoder_hidden=256",
            "model.decoder_conv=64,32",
        ],
    ),
}


def config_for(model: str, batch_size: int, extra: list[str] = ()) -> Config:
    if model not in MODELS:
        raise SystemExit(f"--model must be one of {sorted(MODELS)}, got {model!r}")
    kind, preset, overrides = MODELS[model]
    return apply_overrides(get_config(kind, preset), [*overrides, f"train.batch_size={batch_size}", *extra])


def _primitive_flops(eqn) -> int:
    """FLOPs of one matmul or convolution (2 per multiply-add); 0 for anything else."""
    name = eqn.primitive.name
    out = eqn.outvars[0].aval.shape
    if name == "dot_general":
        (contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2 * math.prod(out) * math.prod(lhs[d] for d in contract)
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, spatial...)
        per_output = rhs[spec[1]] * math.prod(rhs[d] for d in spec[2:])
        # A transposed convolution is a convolution over an input dilated with zeros (lhs_dilation):
        # only 1 in prod(lhs_dilation) of its multiply-adds touches data.
        dilation = math.prod(eqn.params.get("lhs_dilation") or (1,))
        return 2 * math.prod(out) * per_output // eqn.params["feature_group_count"] // dilation
    return 0


def _jaxpr_flops(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += _primitive_flops(eqn)
        for value in eqn.params.values():  # nested jaxprs: pjit, custom_jvp, cond branches, scan ...
            for inner in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    total += _jaxpr_flops(inner)
    return total


def training_flops_per_sample(model, params, image_shape=IMAGE_SHAPE) -> float:
    """3 x the matmul/conv FLOPs of one forward pass (encode, prior, decode) of one example.

    The usual convention (backward = 2 x forward); elementwise work is not counted."""
    x = jnp.zeros((1, *image_shape), jnp.float32)
    c = jnp.zeros((1, NUM_CLASSES), jnp.float32) if model.conditional else None
    jaxpr = jax.make_jaxpr(lambda p: model.apply(p, x, c))(params)
    return 3.0 * _jaxpr_flops(jaxpr.jaxpr)
