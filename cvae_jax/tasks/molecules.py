"""Conditional molecule generation: a SMILES CVAE conditioned on molecular properties (Lim et al. 2018).

    cfg = molecules.make_config("default", ["model.decoder_layers=2"])  # or recipe(train_path, test_path, ...)
    data = molecules.prepare(cfg)                       # SMILES -> tokens; RDKit properties -> condition
    model, state, history = molecules.train(cfg, data)  # a MoleculeTask on the library's one trainer
    smi = molecules.generate(model, state.params, key, data.condition_for({"logp": 3.0}, 1000), data.vocab)
    model, params, data = molecules.load(workdir)       # a run trained with train(..., workdir=...)

The condition is the property vector standardized with the training set's mean and std; ask for
values in the properties' own units through `MoleculeData.condition_for`. Training is the image
runs' trainer (`cvae_jax.training.trainer.fit`): the same step, ELBO, KL schedules and free bits,
devices, checkpoints, exact resume, signals and metrics.jsonl; only the terms
(`cvae_jax.molecules.model.make_terms`) differ. The jobs live in their own modules, re-exported here:
the config (`cvae_jax.molecules.config`), the data (`.dataset`), the network (`.model`), drawing
(`.generation`) and scoring (`.metrics`, `.benchmark`); this module is the task.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cvae_jax.config import ConfigError
from cvae_jax.core import objectives
from cvae_jax.data import smiles
from cvae_jax.molecules import grammar
from cvae_jax.molecules import model as sequence
from cvae_jax.molecules.config import (  # noqa: F401
    PRESETS,
    MoleculeConfig,
    MoleculeDataConfig,
    MoleculeModelConfig,
    make_config,
    recipe,
)
from cvae_jax.molecules.dataset import MoleculeData, prepare  # noqa: F401
from cvae_jax.molecules.generation import generate, property_control, reconstruction  # noqa: F401
from cvae_jax.training.checkpoint import Checkpoints
from cvae_jax.training.step import base_key, make_optimizer
from cvae_jax.training.tasks import Parts, Task, fingerprint_arrays
from cvae_jax.training.trainer import fit


def build_model(cfg: MoleculeConfig, data: MoleculeData, prior=None) -> sequence.SmilesVAE:
    return sequence.build(
        data.vocab.size,
        data.length,
        latent_dim=cfg.model.latent_dim,
        condition_dim=len(data.names),
        embed_dim=cfg.model.embed_dim,
        encoder_hidden=cfg.model.encoder_hidden,
        decoder_hidden=cfg.model.decoder_hidden,
        decoder_layers=cfg.model.decoder_layers,
        word_dropout=cfg.model.word_dropout,
        prior=prior,
        grammar_table=grammar.syntax(data.vocab) if cfg.model.grammar_features else None,
    )


def _rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"tokens": arrays["tokens"], "condition": arrays["condition"]}


def _conditioning(cfg: MoleculeConfig, data: MoleculeData) -> dict:
    """What a saved model needs besides its weights: the config, vocabulary and condition units."""
    return {
        "config": cfg.to_dict(),
        "vocab": list(data.vocab.tokens),
        "length": data.length,
        "names": list(data.names),
        "mean": data.mean.tolist(),
        "std": data.std.tolist(),
        "median": data.median.tolist(),
    }


class MoleculeTask(Task):
    """The SMILES (C)VAE as a task: rows {"tokens", "condition"}, the sequence ELBO with word dropout."""

    name = "molecules"
    config_class = MoleculeConfig
    presets = PRESETS

    @classmethod
    def make_config(cls, preset: str = "default", overrides=()) -> MoleculeConfig:
        return make_config(preset, overrides)

    @classmethod
    def from_config(cls, config: MoleculeConfig) -> MoleculeTask:
        return cls(config, prepare(config))

    @classmethod
    def read_config(cls, saved: dict[str, Any], config_class=None) -> MoleculeConfig:
        return MoleculeConfig.from_dict(saved)

    def __init__(self, cfg: MoleculeConfig, data: MoleculeData, prior=None):
        self.config, self.data, self.prior = cfg, data, prior
        self.train_rows, self.test_rows = _rows(data.train), _rows(data.test)
        if data.validation is not None and len(data.validation["tokens"]):
            self.validation_rows = _rows(data.validation)

    def build(self, total_steps: int) -> Parts:
        tc, model = self.config.train, build_model(self.config, self.data, self.prior)
        loss = objectives.make_elbo_loss(sequence.make_terms(model, training=True), cfg=tc, total_steps=total_steps)
        return Parts(model=model, terms=sequence.make_terms(model), loss=loss, tx=make_optimizer(tc, total_steps))

    def example(self) -> dict[str, np.ndarray]:
        # From the vocabulary's row length and the properties, not the rows (a loaded model has none).
        return {
            "tokens": np.zeros((2, self.data.length), np.int32),
            "condition": np.zeros((2, len(self.data.names)), np.float32),
        }

    def model_inputs(self, batch):
        return batch["tokens"], (batch["condition"] if self.data.names else None)

    def fingerprint(self) -> str:
        held = () if self.validation_rows is None else self.validation_rows.values()
        return fingerprint_arrays(
            *self.train_rows.values(),
            *self.test_rows.values(),
            *held,
            extra=json.dumps(list(self.data.vocab.tokens)),
        )

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "molecules": _conditioning(self.config, self.data)}

    def data_description(self) -> str:
        d = self.config.data
        return f"data.train_path={d.train_path or 'MOSES'!r}, data.test_path={d.test_path or 'MOSES'!r}"


def train(
    cfg: MoleculeConfig, data: MoleculeData, *, prior=None, workdir: str | Path | None = None, progress: bool = False
):
    """Trains from the seed: (model, state, history), history being the metrics.jsonl entries (a
    "train" and a "test" line per epoch, epoch 0 = untrained; -ELBO, recon and KL in nats per molecule).

    With `workdir`, an Orbax checkpoint is written after every epoch, and a workdir that holds a run
    of the same config and data resumes it: the same numbers as a run that never stopped (a
    finished run returns at once). A larger train.epochs trains a finished run on; other settings
    that differ are refused, by name. Devices, hosts, signals and the NaN policy are the trainer's."""
    fitted = fit(MoleculeTask(cfg, data, prior), workdir, progress=progress)
    return fitted.parts.model, fitted.state, fitted.history


def conditioning_data(saved: dict) -> tuple[MoleculeConfig, MoleculeData]:
    """(config, data) from what a saved model keeps besides its weights (`_conditioning`): the data carry
    the vocabulary and condition units; their train and test sets are empty."""
    cfg = MoleculeConfig.from_dict(saved["config"])
    empty = {
        "tokens": np.zeros((0, saved["length"]), np.int32),
        "condition": np.zeros((0, len(saved["names"])), np.float32),
    }
    data = MoleculeData(
        smiles.Vocab(tuple(saved["vocab"]), cfg.data.representation),
        saved["length"],
        tuple(saved["names"]),
        *(np.asarray(saved[k]) for k in ("mean", "std", "median")),
        empty,
        empty,
        [],
        [],
    )
    return cfg, data


def load(workdir: str | Path, which: str | int = "best", prior=None):
    """(model, params, data) of a saved molecule run; `data` carries the vocabulary and condition units
    (its train and test sets are empty). which: "best" (by validation -ELBO; refused for a run without
    validation molecules), "latest" or a step."""
    with Checkpoints(workdir, read_only=True) as ckpts:
        if ckpts.read_meta(ckpts.resolve("latest")).get("molecules") is None:
            raise ConfigError(f"{workdir} holds no molecule run (cvae_jax.molecules.train writes one)")
        step = ckpts.resolve(which)
        cfg, data = conditioning_data(ckpts.read_meta(step)["molecules"])
        task = MoleculeTask(cfg, data, prior)
        parts = task.build(1)
        target = jax.eval_shape(lambda: task.init(parts))
        state, _, _ = ckpts.restore(step, target, jax.random.key_data(base_key(cfg.seed)))
    return parts.model, state.params, data
