"""Pure Flax modules: encoders, decoders, and the VAE / CVAE that combine them.

A model exposes two methods and nothing else is ever overridden by a variant:
  encode(x, condition) -> (mean, log_var)       the diagonal Gaussian posterior q(z | x[, c])
  decode(z, condition) -> likelihood parameters  e.g. {"logits": ...} for a Bernoulli decoder
Randomness never enters a module: the objective draws z from keys it is given.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.config import ConfigError, ModelConfig
from cvae_jax.core import distributions as D
from cvae_jax.core import likelihoods
from cvae_jax.core import posteriors as posteriors_lib
from cvae_jax.core import priors as priors_lib
from cvae_jax.nn import layers


class _Layered(nn.Module):
    """Builds its layers from the backend `kernels` names, in compute dtype `dtype`."""

    @property
    def _layer(self) -> dict:
        return {"kernels": self.kernels, "dtype": self.dtype}


class Encoder(_Layered):
    """Optional conv stack (conv_kernel x conv_kernel) -> flatten -> dense layers -> (mean, log_var)."""

    latent_dim: int
    hidden: Sequence[int] = (512, 512)
    conv: Sequence[int] = ()
    conv_stride: int = 2
    conv_kernel: int = 3
    condition_site: str = "input"  # "input": before the dense layers; "head": after them
    dtype: jnp.dtype = jnp.float32  # compute dtype (parameters stay float32); outputs are float32
    kernels: str = "flax"  # layer backend (cvae_jax.nn.layers): "flax", "tuned" or "auto"
    context_dim: int = 0  # > 0: also a context vector for the posterior (e.g. IAF's h)

    @nn.compact
    def __call__(self, x: jax.Array, condition: jax.Array | None = None):
        h = x.astype(self.dtype)
        for features in self.conv:
            h = nn.relu(layers.conv(features, self.conv_kernel, self.conv_stride, **self._layer)(h))
        h = h.reshape(h.shape[0], -1)
        if condition is not None and self.condition_site == "input":
            h = jnp.concatenate([h, condition.astype(h.dtype)], axis=-1)
        for width in self.hidden:
            h = nn.relu(layers.dense(width, **self._layer)(h))
        if condition is not None and self.condition_site == "head":
            h = jnp.concatenate([h, condition.astype(h.dtype)], axis=-1)
        return layers.posterior_head(h, self.latent_dim, self.context_dim, self._layer)


class Decoder(_Layered):
    """concat(z, c) -> dense layers -> [transposed-conv stack] -> likelihood parameters."""

    data_shape: tuple[int, int, int]  # (H, W, C)
    hidden: Sequence[int] = (512, 512)
    conv: Sequence[int] = ()
    conv_kernel: int = 3
    likelihood: str = "bernoulli"
    gaussian_scale: float = 0.1
    learn_scale: bool = False
    mixtures: int = 10  # discretized logistic components (likelihood="discretized_logistic")
    dtype: jnp.dtype = jnp.float32  # compute dtype (parameters stay float32); outputs are float32
    kernels: str = "flax"  # layer backend (cvae_jax.nn.layers): "flax", "tuned" or "auto"

    @nn.compact
    def __call__(self, z: jax.Array, condition: jax.Array | None = None):
        height, width, image_channels = self.data_shape
        channels = image_channels * likelihoods.outputs_per_dimension(self.likelihood, self.mixtures)
        h = z if condition is None else jnp.concatenate([z, condition.astype(z.dtype)], axis=-1)
        h = h.astype(self.dtype)
        for size in self.hidden:
            h = nn.relu(layers.dense(size, **self._layer)(h))
        if self.conv:
            scale = 2 ** len(self.conv)
            h = nn.relu(layers.dense((height // scale) * (width // scale) * self.conv[0], **self._layer)(h))
            h = h.reshape(h.shape[0], height // scale, width // scale, self.conv[0])
            for i, features in enumerate(self.conv):
                h = nn.relu(
                    layers.conv_transpose(features, self.conv_kernel, 2, name=f"ConvTranspose_{i}", **self._layer)(h)
                )
            out = layers.conv(channels, 3, 1, name="out", **self._layer)(h)
        else:
            out = layers.dense(height * width * channels, name="out", **self._layer)(h)
            out = out.reshape(out.shape[0], height, width, channels)
        out = out.astype(jnp.float32)  # the likelihood (and so the loss) is computed in float32
        log_scale = None  # the Gaussian likelihood's log std per data dimension: fixed, or a parameter
        if self.likelihood == "gaussian":
            init = math.log(self.gaussian_scale)
            if self.learn_scale:
                log_scale = self.param("log_scale", nn.initializers.constant(init), self.data_shape)
            else:
                log_scale = jnp.full(self.data_shape, init, jnp.float32)
        return likelihoods.from_decoder(out, self.likelihood, self.mixtures, log_scale)


class VAE(nn.Module):
    """An unconditional VAE (Kingma & Welling 2014). `condition` must be None."""

    encoder: Encoder
    decoder: Decoder
    prior: priors_lib.Prior
    condition_dim: int = 0  # width of the condition vector (CVAE); 0 = not checked
    # q(z | x) on the encoder's (mean, log_var); None is the diagonal Gaussian (cvae_jax.core.posteriors)
    posterior: posteriors_lib.Posterior | None = None
    # A module an objective trains beside the VAE on its latents (FactorVAE's discriminator), with its
    # own optimizer; its parameters live under params["params"]["critic"].
    critic: nn.Module | None = None

    conditional = False

    def _check(self, condition, rows: int):
        if condition is not None and not self.conditional:
            raise ValueError("VAE takes no condition; use CVAE (model.kind=cvae) for conditional models")
        if condition is None and self.conditional:
            raise ValueError("CVAE needs a condition (one-hot label or conditioning vector)")
        if condition is None:
            return
        if condition.ndim != 2 or condition.shape[0] != rows:
            raise ValueError(
                f"condition must have shape [{rows}, {self.condition_dim or 'C'}] (one row per "
                f"input), got {tuple(condition.shape)}"
            )
        if self.condition_dim and condition.shape[1] != self.condition_dim:
            raise ValueError(
                f"condition has width {condition.shape[1]} but this model was trained with "
                f"{self.condition_dim} (e.g. one-hot over {self.condition_dim} classes)"
            )

    def _encoder_outputs(self, x: jax.Array, condition: jax.Array | None):
        expected = tuple(self.decoder.data_shape)
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape [N, {', '.join(map(str, expected))}] for this model, got {tuple(x.shape)}"
            )
        self._check(condition, x.shape[0])
        return self.encoder(x, condition)

    def encode(self, x: jax.Array, condition: jax.Array | None = None):
        mean, log_var, *_ = self._encoder_outputs(x, condition)
        return mean, log_var

    def encode_full(self, x: jax.Array, condition: jax.Array | None = None):
        """(mean, log_var, context): the encoder's outputs with the posterior's context vector (None when
        the posterior wants none; then this is `encode`, a subclass's own included)."""
        if not posteriors_lib.context_size(self.posterior):
            return (*self.encode(x, condition), None)
        mean, log_var, context = self._encoder_outputs(x, condition)
        return mean, log_var, context

    def decode(self, z: jax.Array, condition: jax.Array | None = None):
        if z.ndim != 2:
            raise ValueError(f"latents must have shape [N, latent_dim], got {tuple(z.shape)}")
        self._check(condition, z.shape[0])
        return self.decoder(z, condition)

    def _prior_args(self, condition):
        return {
            "condition": condition if self.prior.conditional else None,
            "encoder": self.encoder if self.prior.needs_encoder else None,
        }

    def prior_log_prob(self, z: jax.Array, condition: jax.Array | None = None) -> jax.Array:
        """log p(z[ | c]), one value per row of z."""
        return self.prior.log_prob(z, **self._prior_args(condition))

    def prior_sample(self, key: jax.Array, num: int, condition: jax.Array | None = None) -> jax.Array:
        return self.prior.sample(key, num, **self._prior_args(condition))

    def posterior_sample(self, key: jax.Array, mean, log_var, num_samples: int = 1, context=None):
        """(z [K, B, D], log q(z | x) [K, B]) from the posterior on the encoder's outputs."""
        if self.posterior is None:
            return posteriors_lib.DiagonalGaussian(mean.shape[-1]).sample(key, mean, log_var, num_samples)
        if posteriors_lib.context_size(self.posterior):
            return self.posterior.sample(key, mean, log_var, num_samples, context)
        return self.posterior.sample(key, mean, log_var, num_samples)

    def posterior_log_prob(self, z: jax.Array, mean, log_var, context=None) -> jax.Array:
        """log q(z | x) [..., B] of any z [..., B, D] under the posterior on the encoder's outputs."""
        if self.posterior is None:
            return D.diag_gaussian_log_prob(z, mean, log_var)
        if posteriors_lib.context_size(self.posterior):
            return self.posterior.log_prob(z, mean, log_var, context)
        return self.posterior.log_prob(z, mean, log_var)

    def critic_logits(self, z: jax.Array) -> jax.Array:
        """The critic's output on latents z [B, D] (an objective's, e.g. FactorVAE's two class logits)."""
        return self.critic(z)

    def kl_to_prior(self, mean, log_var, z, condition=None) -> jax.Array:
        """KL(q(z | x) || p(z)): analytic when the prior defines `kl`, else log q(z|x) - log p(z) at z."""
        if priors_lib.has_analytic_kl(self.prior):
            return self.prior.kl(mean, log_var, **self._prior_args(condition))
        return D.diag_gaussian_log_prob(z, mean, log_var) - self.prior_log_prob(z, condition)

    def __call__(self, x: jax.Array, condition: jax.Array | None = None):
        """Encodes, scores under the prior and decodes the posterior mean; used to initialize parameters."""
        mean, log_var, context = self.encode_full(x, condition)
        self.prior_log_prob(mean, condition)
        if self.critic is not None:  # creates its parameters
            self.critic(mean)
        if not posteriors_lib.is_gaussian(self.posterior):  # creates its parameters
            self.posterior_sample(jax.random.key(0), mean, log_var, 1, context)
        return self.decode(mean, condition)


class CVAE(VAE):
    """A conditional VAE (Sohn et al. 2015): the condition enters both encoder and decoder."""

    conditional = True


def build_model(
    cfg: ModelConfig, data_shape: tuple[int, int, int], num_classes: int = 10, prior: priors_lib.Prior | None = None
) -> VAE:
    """The VAE or CVAE that `cfg` describes, for images of shape (H, W, C).

    `prior` overrides `cfg.prior` with any Prior module (e.g. one defined in your own file).
    """
    if len(data_shape) != 3:
        raise ConfigError(f"images must have shape (H, W, C), got {data_shape}")
    cls = CVAE if cfg.kind == "cvae" else VAE
    if prior is None:
        prior = priors_lib.make(cfg.prior, cfg, data_shape, num_classes)
    try:
        posterior = posteriors_lib.make(cfg.posterior, cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if type(posterior) is posteriors_lib.DiagonalGaussian:
        posterior = None  # the model's own default: the same computation, no submodule
    condition_dim = num_classes if cfg.kind == "cvae" else 0
    context_dim = posteriors_lib.context_size(posterior)
    if cfg.architecture == "hvae":
        return _hierarchical(cfg, tuple(data_shape), condition_dim)
    if cfg.architecture == "vqvae":
        return _vqvae(cfg, tuple(data_shape))
    if cfg.architecture == "resnet":
        encoder, decoder = _resnet(cfg, tuple(data_shape), context_dim)
        return cls(encoder=encoder, decoder=decoder, prior=prior, condition_dim=condition_dim, posterior=posterior)
    scale = 2 ** len(cfg.decoder_conv)
    if cfg.decoder_conv and (data_shape[0] % scale or data_shape[1] % scale):
        raise ConfigError(
            f"model.decoder_conv={cfg.decoder_conv} upsamples by {scale}: image height and width "
            f"{data_shape[:2]} must divide by {scale}; use fewer decoder_conv layers"
        )
    dtype, kernels = jnp.dtype(cfg.compute_dtype), layers.resolve(cfg.kernels)
    encoder = Encoder(
        latent_dim=cfg.latent_dim,
        hidden=tuple(cfg.encoder_hidden),
        conv=tuple(cfg.encoder_conv),
        conv_stride=cfg.encoder_conv_stride,
        conv_kernel=cfg.conv_kernel,
        condition_site=cfg.condition_site,
        dtype=dtype,
        kernels=kernels,
        context_dim=context_dim,
    )
    decoder = Decoder(
        data_shape=tuple(data_shape),
        hidden=tuple(cfg.decoder_hidden),
        conv=tuple(cfg.decoder_conv),
        conv_kernel=cfg.conv_kernel,
        likelihood=cfg.likelihood,
        gaussian_scale=cfg.gaussian_scale,
        learn_scale=cfg.learn_scale,
        mixtures=cfg.logistic_mixtures,
        dtype=dtype,
        kernels=kernels,
    )
    return cls(encoder=encoder, decoder=decoder, prior=prior, condition_dim=condition_dim, posterior=posterior)


def _check_stages(cfg: ModelConfig, data_shape: tuple[int, int, int]) -> None:
    scale = 2 ** (len(cfg.resnet_widths) - 1)
    if data_shape[0] % scale or data_shape[1] % scale:
        raise ConfigError(
            f"model.resnet_widths={cfg.resnet_widths} has {len(cfg.resnet_widths)} stages, which halve the image "
            f"{len(cfg.resnet_widths) - 1} times: height and width {data_shape[:2]} must divide by {scale}; use "
            "fewer widths or pad the images"
        )


def _vqvae(cfg: ModelConfig, data_shape: tuple[int, int, int]):
    from cvae_jax.core.vqvae import VQVAE

    scale = 2 ** len(cfg.vq_widths)
    if data_shape[0] % scale or data_shape[1] % scale:
        raise ConfigError(
            f"model.vq_widths={cfg.vq_widths} halves the image {len(cfg.vq_widths)} times: height and width "
            f"{data_shape[:2]} must divide by {scale}; use fewer widths"
        )
    return VQVAE(
        data_shape=data_shape,
        code_dim=cfg.latent_dim,
        codebook_size=cfg.codebook_size,
        widths=tuple(cfg.vq_widths),
        likelihood=cfg.likelihood,
        mixtures=cfg.logistic_mixtures,
        gaussian_scale=cfg.gaussian_scale,
        ema_decay=cfg.codebook_decay,
        commitment=cfg.commitment,
        dtype=jnp.dtype(cfg.compute_dtype),
        kernels=layers.resolve(cfg.kernels),
    )


def _hierarchical(cfg: ModelConfig, data_shape: tuple[int, int, int], condition_dim: int):
    from cvae_jax.core.hierarchical import HierarchicalVAE

    _check_stages(cfg, data_shape)
    return HierarchicalVAE(
        data_shape=data_shape,
        widths=tuple(cfg.resnet_widths),
        blocks=cfg.resnet_blocks,
        groups_per_stage=cfg.hvae_groups,
        latent_channels=cfg.hvae_latent_channels,
        likelihood=cfg.likelihood,
        mixtures=cfg.logistic_mixtures,
        gaussian_scale=cfg.gaussian_scale,
        condition_dim=condition_dim,
        remat=cfg.remat,
        dtype=jnp.dtype(cfg.compute_dtype),
        kernels=layers.resolve(cfg.kernels),
    )


def _resnet(cfg: ModelConfig, data_shape: tuple[int, int, int], context_dim: int = 0):
    from cvae_jax.core import resnet

    _check_stages(cfg, data_shape)
    common = {
        "widths": tuple(cfg.resnet_widths),
        "blocks": cfg.resnet_blocks,
        "remat": cfg.remat,
        "dtype": jnp.dtype(cfg.compute_dtype),
        "kernels": layers.resolve(cfg.kernels),
    }
    encoder = resnet.ResNetEncoder(latent_dim=cfg.latent_dim, context_dim=context_dim, **common)
    decoder = resnet.ResNetDecoder(
        data_shape=data_shape,
        likelihood=cfg.likelihood,
        mixtures=cfg.logistic_mixtures,
        gaussian_scale=cfg.gaussian_scale,
        **common,
    )
    return encoder, decoder
