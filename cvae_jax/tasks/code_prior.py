"""The second stage of a VQ-VAE: an autoregressive prior over its grid of codes (a small causal
transformer over the cells in raster order), trained on the codes of the VQ-VAE's training images by
the one trainer, as a task of its own.

    cvae-jax train --model vae --set model.architecture=vqvae --workdir runs/vq          # stage 1
    cvae-jax train --task code_prior --set data.vqvae=runs/vq --workdir runs/vq_prior  # stage 2
    cvae-jax sample --workdir runs/vq --code-prior runs/vq_prior --out samples.npy

Its terms are "nll", -log p(codes) in nats per image; with the VQ-VAE's reconstruction term it bounds
the image's negative log-likelihood (the posterior being the point mass on the nearest codes):
-log p(x) <= -log p(x | z_q(x)) - log p(z_q(x)), reported by `two_stage` (also in bits/dim).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.config import ConfigError, RunConfig, TrainConfig
from cvae_jax.core import likelihoods
from cvae_jax.data import images as data_lib
from cvae_jax.training import checkpoint
from cvae_jax.training.step import base_key, make_optimizer
from cvae_jax.training.tasks import Parts, Task


@dataclasses.dataclass
class CodePriorData:
    vqvae: str = ""  # the VQ-VAE's run directory
    vqvae_checkpoint: str = "latest"  # which of its checkpoints: latest, best, or a step


@dataclasses.dataclass
class CodePriorModel:
    width: int = 64
    layers: int = 2
    heads: int = 4


@dataclasses.dataclass
class CodePriorConfig(RunConfig):
    data: CodePriorData = dataclasses.field(default_factory=CodePriorData)
    model: CodePriorModel = dataclasses.field(default_factory=CodePriorModel)
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=30, learning_rate=1e-3))

    def validate(self) -> CodePriorConfig:
        super().validate()
        if not self.data.vqvae:
            raise ConfigError("the code prior needs its VQ-VAE's run directory: --set data.vqvae=DIR")
        for name in ("width", "layers", "heads"):
            if getattr(self.model, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self.model, name)}")
        if self.model.width % self.model.heads:
            raise ConfigError(f"model.width={self.model.width} must divide by model.heads={self.model.heads}")
        return self


class CausalTransformer(nn.Module):
    """p(c_t | c_<t) over a sequence of codes: BOS-shifted inputs, learned positions, pre-norm blocks."""

    codebook_size: int
    length: int
    width: int = 64
    layers: int = 2
    heads: int = 4

    @nn.compact
    def __call__(self, codes: jax.Array) -> jax.Array:
        """Logits [B, L, K] of each cell given those before it (codes int [B, L])."""
        bos = jnp.full((codes.shape[0], 1), self.codebook_size, codes.dtype)
        inputs = jnp.concatenate([bos, codes[:, :-1]], axis=1)
        h = nn.Embed(self.codebook_size + 1, self.width)(inputs)
        h = h + self.param("positions", nn.initializers.normal(0.02), (self.length, self.width))
        mask = nn.make_causal_mask(inputs)
        for _ in range(self.layers):
            h = h + nn.MultiHeadDotProductAttention(self.heads, qkv_features=self.width)(nn.LayerNorm()(h), mask=mask)
            h = h + nn.Dense(self.width)(nn.gelu(nn.Dense(4 * self.width)(nn.LayerNorm()(h))))
        return nn.Dense(self.codebook_size)(nn.LayerNorm()(h))


def code_nll(model: CausalTransformer, params, codes: jax.Array) -> jax.Array:
    """-log p(codes) [B], in nats: the sum over cells of the prior's cross-entropy."""
    logits = model.apply(params, codes)
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), codes[..., None], -1)[..., 0], -1)


def sample_codes(model: CausalTransformer, params, key: jax.Array, num: int, temperature: float = 1.0):
    """int32 [num, L] codes drawn cell by cell (ancestral sampling)."""

    def body(t, codes):
        logits = model.apply(params, codes)[:, t] / max(temperature, 1e-6)
        return codes.at[:, t].set(jax.random.categorical(jax.random.fold_in(key, t), logits).astype(jnp.int32))

    return jax.lax.fori_loop(0, model.length, body, jnp.zeros((num, model.length), jnp.int32))


def codes_of(vq_model, vq_params, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """int32 [N, h * w]: each image's nearest codes, in raster order."""
    encode = jax.jit(
        lambda p, x: vq_model.apply(p, vq_model.apply(p, x, method=vq_model.encode_grid), method=vq_model.nearest)
    )
    out = [np.asarray(encode(vq_params, images[i : i + batch])) for i in range(0, len(images), batch)]
    return np.concatenate(out).reshape(len(images), -1).astype(np.int32)


def _load_vqvae(cfg: CodePriorConfig):
    from cvae_jax.tasks.images import load_run

    which = cfg.data.vqvae_checkpoint
    run = load_run(cfg.data.vqvae, int(which) if which.isdigit() else which)
    if not getattr(run.model, "vector_quantized", False):
        raise ConfigError(f"{cfg.data.vqvae} holds no VQ-VAE run (train one with --set model.architecture=vqvae)")
    return run


class CodePriorTask(Task):
    """Rows {"codes": int32 [N, h * w]}: the VQ-VAE's codes of its training, validation and test images."""

    name = "code_prior"
    config_class = CodePriorConfig
    selection_metric = "nll"

    def __init__(self, config: CodePriorConfig):
        self.config = config.validate()
        self.vq = _load_vqvae(config)
        vq_cfg = self.vq.config
        dataset = data_lib.hold_out(data_lib.load(vq_cfg.data, progress=False), vq_cfg.data.validation, vq_cfg.seed)
        self.train_rows = {"codes": codes_of(self.vq.model, self.vq.params, dataset.train.images)}
        self.test_rows = {"codes": codes_of(self.vq.model, self.vq.params, dataset.test.images)}
        if dataset.validation is not None:
            self.validation_rows = {"codes": codes_of(self.vq.model, self.vq.params, dataset.validation.images)}

    def build(self, total_steps: int) -> Parts:
        m = self.config.model
        model = CausalTransformer(
            self.vq.model.codebook_size, math.prod(self.vq.model.grid), m.width, m.layers, m.heads
        )

        def terms(params, batch, key):
            del key
            return {"nll": code_nll(model, params, batch["codes"])}

        def loss(params, batch, key, step=0):
            del step
            value = jnp.mean(terms(params, batch, key)["nll"])
            return value, {"nll": value, "loss": value}

        return Parts(model=model, terms=terms, loss=loss, tx=make_optimizer(self.config.train, total_steps))

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "vqvae_step": self.vq.step}


def load_prior(workdir: str | Path, which: str | int = "latest"):
    """(model, params, config) of a trained code prior."""
    with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
        meta = ckpts.read_meta(ckpts.resolve(which))
        if meta.get("task") != CodePriorTask.name:
            raise ConfigError(f"{workdir} holds no code prior (cvae-jax train --task code_prior writes one)")
    config = CodePriorTask.read_config(meta["config"])
    task = CodePriorTask.__new__(CodePriorTask)  # the VQ-VAE without its data: only the model's shapes matter
    task.config, task.vq = config, _load_vqvae(config)
    parts = task.build(1)
    length = math.prod(task.vq.model.grid)
    task.train_rows = {"codes": np.zeros((2, length), np.int32)}
    target = jax.eval_shape(lambda: task.init(parts))
    with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
        state, _, _ = ckpts.restore(ckpts.resolve(which), target, np.asarray(jax.random.key_data(base_key(0))))
    return parts.model, state.params, config, task.vq


def two_stage(vq, prior_model, prior_params, images: np.ndarray, batch: int = 500) -> dict[str, float]:
    """The two-stage bound on -log p(x) of images [N, H, W, C]: the VQ-VAE's reconstruction term at the
    nearest codes plus the prior's -log p(codes), in nats per image and in bits per dimension."""
    model, params = vq.model, vq.params

    @jax.jit
    def per_image(x):
        codes = model.apply(params, model.apply(params, x, method=model.encode_grid), method=model.nearest)
        recon = -likelihoods.log_likelihood(x, model.apply(params, codes, method=model.decode_codes))
        return recon, code_nll(prior_model, prior_params, codes.reshape(len(x), -1))

    parts = [per_image(images[i : i + batch]) for i in range(0, len(images), batch)]
    recon = float(np.mean(np.concatenate([np.asarray(r) for r, _ in parts])))
    prior = float(np.mean(np.concatenate([np.asarray(p) for _, p in parts])))
    dims = math.prod(images.shape[1:])
    return {
        "recon": recon,
        "prior_nll": prior,
        "nll_bound": recon + prior,
        "bits_per_dim": (recon + prior) / (dims * math.log(2)),
    }


def draw(vq, prior_model, prior_params, key: jax.Array, num: int, temperature: float = 1.0) -> np.ndarray:
    """float32 [num, H, W, C]: images decoded from codes the prior draws."""
    codes = jax.jit(sample_codes, static_argnums=(0, 3, 4))(prior_model, prior_params, key, num, temperature)
    decoded = vq.model.apply(vq.params, codes.reshape(num, *vq.model.grid), method=vq.model.decode_codes)
    return np.asarray(likelihoods.mean(decoded))
