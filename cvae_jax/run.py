"""One training run end to end: `train_and_evaluate(config, workdir)`, and `load(workdir)` to use it.

A run directory holds config.json, metrics.jsonl (one JSON object per line), PNG pictures and
Orbax checkpoints in checkpoints/.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax import checkpoint, inference, loop, objectives, parallel, plots
from cvae_jax import data as data_lib
from cvae_jax.config import Config, ConfigError, from_dict, validate
from cvae_jax.models import VAE, build_model
from cvae_jax.train import (EVAL, INIT, SAMPLE, SHUFFLE, TRAIN, TrainState, evaluate_dataset, init_state,
                            make_eval_step, make_optimizer, purpose_key)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to change."""


@dataclasses.dataclass
class Run:
    """What a run produced: the model, final state, per-epoch history and the data it saw."""

    config: Config
    model: VAE
    state: TrainState
    history: list[dict[str, Any]]
    dataset: data_lib.Dataset


@dataclasses.dataclass
class Parts:
    """The pieces a config builds: the model and the pure functions of (params, batch, key)."""

    model: VAE
    terms: Any  # (params, batch, key) -> per-example terms
    loss: Any  # (params, batch, key) -> (loss, metrics)
    tx: Any


def build(config: Config, image_shape, num_classes: int, *, total_steps: int = 1, prior=None) -> Parts:
    """The model, objective and optimizer of `config` (`prior`: a Prior module overriding model.prior)."""
    model = build_model(config.model, image_shape, num_classes, prior=prior)
    terms, loss = objectives.make_objective(model, config.train, num_classes=num_classes,
                                            binarize=config.data.binarize, total_steps=total_steps)
    return Parts(model=model, terms=terms, loss=loss, tx=make_optimizer(config.train))


def init_for(parts: Parts, config: Config, image_shape, num_classes: int) -> TrainState:
    example = {"image": jnp.zeros((1, *image_shape), jnp.float32)}
    condition = jnp.zeros((1, num_classes), jnp.float32) if parts.model.conditional else None
    return init_state(parts.model, parts.tx, example, condition, purpose_key(config.seed, INIT))


def steps_per_call(config: Config, steps_per_epoch: int) -> int:
    """Configured, or auto: a whole epoch per call, except convolutional models on CPU (1 per call)."""
    if config.train.steps_per_call:
        return min(config.train.steps_per_call, steps_per_epoch)
    has_conv = bool(config.model.encoder_conv or config.model.decoder_conv)
    return 1 if has_conv and jax.default_backend() == "cpu" else steps_per_epoch


def _check_fits(config: Config, dataset: data_lib.Dataset, global_batch: int, num_shards: int) -> None:
    n = len(dataset.train)
    if global_batch > n - n % num_shards:
        raise ConfigError(f"train.batch_size={global_batch} is larger than the {n} training examples (the global batch "
                          f"over {num_shards} device(s)); use --batch-size {(n // num_shards) * num_shards} or less")


def _as_arrays(split: data_lib.Split) -> dict[str, np.ndarray]:
    return {"image": split.images, "label": split.labels}


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", disable=not enabled, dynamic_ncols=True, leave=True)


def train_and_evaluate(config: Config, workdir: str | Path | None = None, *, dataset: data_lib.Dataset | None = None,
                       progress: bool = True, prior=None) -> Run:
    """Trains `config` on all its devices and evaluates the test ELBO each epoch; writes into `workdir`.

    `prior` (a cvae_jax.priors.Prior module) overrides config.model.prior for this run; to `load` the
    run later, register the prior under config.model.prior instead. With several processes
    (parallel.initialize) every process calls this; only process 0 writes logs and pictures."""
    validate(config)
    layout = parallel.make_layout(config.parallel)
    global_batch = parallel.global_batch_size(config.train.batch_size, config.parallel, layout.num_shards)
    dataset = dataset if dataset is not None else data_lib.load(config.data)
    _check_fits(config, dataset, global_batch, layout.num_shards)
    primary = parallel.is_primary()
    workdir = Path(workdir) if workdir is not None else None
    if workdir is not None:
        if checkpoint.latest_step(workdir) is not None:
            raise FileExistsError(f"{str(workdir)!r} already holds a trained run; choose a new --workdir "
                                  "(or delete the old one) so that its results are not overwritten")
        if primary:
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "config.json").write_text(config.to_json() + "\n")
            (workdir / "metrics.jsonl").write_text("")

    rows = parallel.shard_rows(_as_arrays(dataset.train), layout.num_shards, layout.local_shards, config.seed)
    steps_total = (len(dataset.train) // layout.num_shards) // (global_batch // layout.num_shards) * config.train.epochs
    parts = build(config, dataset.image_shape, dataset.num_classes, total_steps=steps_total, prior=prior)
    program = loop.make_program(layout, parts.loss, parts.tx, rows, global_batch,
                                lambda steps: steps_per_call(config, steps))
    steps_per_epoch = program.steps_per_epoch
    state = layout.put_replicated(init_for(parts, config, dataset.image_shape, dataset.num_classes))
    eval_step = jax.jit(make_eval_step(parts.terms))
    test_data = _as_arrays(dataset.test)
    train_key = np.asarray(jax.random.key_data(purpose_key(config.seed, TRAIN)))
    shuffle_key = np.asarray(jax.random.key_data(purpose_key(config.seed, SHUFFLE)))
    eval_key = purpose_key(config.seed, EVAL)

    history: list[dict[str, Any]] = []

    def record(entry: dict[str, Any]) -> None:
        history.append(entry)
        if workdir is not None and primary:
            with open(workdir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")

    def test_entry(epoch: int, params) -> dict[str, Any]:
        metrics = evaluate_dataset(eval_step, params, test_data, config.train.eval_batch_size, eval_key)
        return {"epoch": epoch, "split": "test", "step": epoch * steps_per_epoch, **metrics}

    record(test_entry(0, layout.local_value(state.params)))
    bar = _progress(config.train.epochs * steps_per_epoch, progress and primary)
    for epoch in range(1, config.train.epochs + 1):
        start = time.perf_counter()
        perm = program.permute(shuffle_key, epoch)
        sums = None
        for first, size in program.call_sizes():
            state, metrics = program.calls[size](state, program.data, perm, first, train_key)
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
            bar.update(size)
        sums = jax.device_get(layout.local_value(sums))
        seconds = time.perf_counter() - start
        train = {name: float(value) / steps_per_epoch for name, value in sums.items()}
        if not all(math.isfinite(v) for v in train.values()):
            bar.close()
            raise TrainingError(f"the training loss became non-finite in epoch {epoch} ({train}); "
                                "lower train.learning_rate or check the data for NaN/Inf")
        record({"epoch": epoch, "split": "train", "step": epoch * steps_per_epoch, **train,
                "seconds": seconds, "samples_per_s": steps_per_epoch * global_batch / seconds})
        test = test_entry(epoch, layout.local_value(state.params))
        record(test)
        bar.set_postfix(train_neg_elbo=f"{train['neg_elbo']:.1f}", test_neg_elbo=f"{test['neg_elbo']:.1f}")
    bar.close()

    final = layout.local_value(state)
    if workdir is not None:
        meta = {"config": config.to_dict(), "image_shape": list(dataset.image_shape),
                "num_classes": dataset.num_classes, "data_name": dataset.name}
        checkpoint.save(workdir, layout.global_value(state), meta)
        if primary:
            write_pictures(workdir, parts.model, final.params, config, dataset)
    return Run(config=config, model=parts.model, state=final, history=history, dataset=dataset)


def load(workdir: str | Path, step: int | None = None) -> tuple[VAE, Any, Config, dict[str, Any]]:
    """Loads a trained run: (model, params, config, meta), from its latest (or given) checkpoint."""
    step, meta = checkpoint.read_meta(workdir, step)
    config = from_dict(meta["config"])
    image_shape, num_classes = tuple(meta["image_shape"]), int(meta["num_classes"])
    parts = build(config, image_shape, num_classes)
    target = jax.eval_shape(lambda: init_for(parts, config, image_shape, num_classes))
    state = checkpoint.restore(workdir, target, step)
    return parts.model, state.params, config, meta


def write_pictures(workdir: Path, model: VAE, params, config: Config, dataset: data_lib.Dataset) -> list[Path]:
    """Reconstructions, samples, the class grid (CVAE) and, for a 2-D latent, scatter and manifold."""
    key = purpose_key(config.seed, SAMPLE)
    num_classes, latent_dim = dataset.num_classes, config.model.latent_dim
    test = dataset.test
    cond = (lambda labels: inference.one_hot(labels, num_classes)) if model.conditional else (lambda labels: None)
    written = []

    def out(name: str) -> Path:
        written.append(workdir / name)
        return workdir / name

    images = test.images[:10]
    recon = np.asarray(inference.reconstruct(model, params, images, cond(test.labels[:10])))
    plots.save_grid(out("reconstructions.png"), np.concatenate([images, recon]), 2, 10,
                    "test digits (top) and reconstructions (bottom)")

    labels = np.arange(64) % num_classes
    samples = np.asarray(inference.sample(model, params, key, 64, cond(labels)))
    plots.save_grid(out("samples.png"), samples, 8, 8, "random samples" + (" (label = index mod classes)" if model.conditional else ""))

    if model.conditional:
        # The same key for every class: for an unconditional prior each column shares its z (the "style").
        grid = [inference.sample(model, params, jax.random.fold_in(key, 1), 10, cond(np.full(10, c)))
                for c in range(num_classes)]
        plots.save_grid(out("class_grid.png"), np.concatenate(grid), num_classes, 10,
                        "one row per class; each column shares z", [str(c) for c in range(num_classes)])

    if latent_dim == 2:
        mean, _ = inference.encode(model, params, test.images, cond(test.labels))
        plots.save_latent_scatter(out("latent_scatter.png"), np.asarray(mean), test.labels,
                                  "posterior means of the test set")
        z = plots.manifold_grid(12)
        if model.conditional:
            rows = [inference.decode_mean(model, params, z[i * 12:(i + 1) * 12], cond(np.full(12, c)))
                    for c in range(num_classes) for i in range(0, 12, 3)]
            plots.save_grid(out("manifold.png"), np.concatenate(rows), num_classes * 4, 12,
                            "decoded latent grid per class (every 3rd row of a 12x12 grid)")
        else:
            plots.save_grid(out("manifold.png"), np.asarray(inference.decode_mean(model, params, z)), 12, 12,
                            "decoded latent grid, z in [-2, 2]^2")
    return written
