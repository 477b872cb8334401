"""One training run end to end: `train_and_evaluate(config, workdir)`, and `load(workdir)` to use it.

A run directory holds config.json, metrics.jsonl (one JSON object per line: "train" and "test"
entries per epoch, a "checkpoint" entry per save), PNG pictures and Orbax checkpoints in
checkpoints/ (see cvae_jax.checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax import checkpoint, loop, objectives, parallel, resume
from cvae_jax import data as data_lib
from cvae_jax.config import Config, ConfigError, from_dict, validate
from cvae_jax.models import VAE, build_model
from cvae_jax.pictures import write_pictures
from cvae_jax.train import (EVAL, INIT, SHUFFLE, TRAIN, TrainState, base_key, evaluate_dataset, init_state,
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
    """Configured, or auto: a whole epoch per call (the fastest mode measured for every benchmarked
    model on CPU and GPU; see docs/performance.md)."""
    if config.train.steps_per_call:
        return min(config.train.steps_per_call, steps_per_epoch)
    return steps_per_epoch


def _check_fits(config: Config, dataset: data_lib.Dataset, global_batch: int, num_shards: int) -> None:
    for name, split in (("train", dataset.train), ("test", dataset.test)):
        labels = np.asarray(split.labels)
        if labels.size and (labels.min() < 0 or labels.max() >= dataset.num_classes):
            raise data_lib.DataError(f"{dataset.name} {name} labels must lie in 0..{dataset.num_classes - 1} "
                                     f"(num_classes={dataset.num_classes}), got {labels.min()}..{labels.max()}")
        if split.images.shape[1:] != dataset.image_shape:
            raise data_lib.DataError(f"{dataset.name} {name} images have shape {split.images.shape[1:]}, "
                                     f"expected {dataset.image_shape} like the training images")
    n = len(dataset.train)
    if global_batch > n - n % num_shards:
        raise ConfigError(f"train.batch_size={global_batch} is larger than the {n} training examples (the global batch "
                          f"over {num_shards} device(s)); use --batch-size {(n // num_shards) * num_shards} or less")


def _as_arrays(split: data_lib.Split) -> dict[str, np.ndarray]:
    return {"image": split.images, "label": split.labels}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True, leave=True)


def _derive(key_data: np.ndarray, purpose: int) -> np.ndarray:
    """Raw key data of fold_in(base key, purpose)."""
    return np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(key_data), purpose)))


def _epoch_means(sums: dict[str, float], steps: int) -> dict[str, float]:
    """Per-step means of the loss metrics over the finite steps, and the count of skipped steps."""
    skipped = int(round(sums.pop("nonfinite", 0.0)))
    finite = steps - skipped
    out = {name: (float(value) / finite if finite else float("nan")) for name, value in sums.items()}
    out["skipped_steps"] = skipped
    return out


def train_and_evaluate(config: Config, workdir: str | Path | None = None, *, dataset: data_lib.Dataset | None = None,
                       progress: bool = True, prior=None) -> Run:
    """Trains `config` on all its devices, evaluating the test ELBO each epoch; with a `workdir`,
    writes metrics, pictures and Orbax checkpoints there, and resumes the run it already holds.

    A resumed run continues from its latest checkpoint (parameters, optimizer state, step, key,
    data position, partial epoch sums) and ends bit-identical to one that never stopped (same
    device count). SIGTERM/SIGINT save a checkpoint and raise `Interrupted`. `prior` (a
    cvae_jax.priors.Prior module) overrides config.model.prior; to `load` the run later, register
    the prior under config.model.prior instead. With several processes every process calls this;
    only process 0 writes logs and pictures."""
    validate(config)
    layout = parallel.make_layout(config.parallel)
    global_batch = parallel.global_batch_size(config.train.batch_size, config.parallel, layout.num_shards)
    if dataset is None:
        dataset = data_lib.load(config.data, progress=progress and parallel.is_primary())
    _check_fits(config, dataset, global_batch, layout.num_shards)
    data_fingerprint = resume.fingerprint(dataset)
    primary = parallel.is_primary()
    workdir = checkpoint.check_workdir(workdir) if workdir is not None else None
    ckpts = None
    if workdir is not None:
        if primary:
            workdir.mkdir(parents=True, exist_ok=True)
        ckpts = checkpoint.Checkpoints(workdir, config.checkpoint)

    rows = parallel.shard_rows(_as_arrays(dataset.train), layout.num_shards, layout.local_shards, config.seed)
    per_shard_batch = global_batch // layout.num_shards
    steps_total = (len(dataset.train) // layout.num_shards) // per_shard_batch * config.train.epochs
    parts = build(config, dataset.image_shape, dataset.num_classes, total_steps=steps_total, prior=prior)
    program = loop.make_program(layout, parts.loss, parts.tx, rows, global_batch,
                                lambda steps: steps_per_call(config, steps), config.train.microbatches,
                                config.train.unroll_microbatches)
    steps_per_epoch = program.steps_per_epoch
    state = layout.put_replicated(init_for(parts, config, dataset.image_shape, dataset.num_classes))
    key_data = np.asarray(jax.random.key_data(base_key(config.seed)))
    epoch, first_batch, partial = 1, 0, None
    history: list[dict[str, Any]] = []
    metrics_path = workdir / "metrics.jsonl" if workdir is not None else None

    resume_step = ckpts.latest_step() if ckpts is not None else None
    if resume_step is not None:
        where = repr(str(workdir))
        meta = ckpts.read_meta(resume_step)
        resume.check_resumable(meta, from_dict(meta["config"]), config, data_fingerprint, where, steps_total)
        restored, saved_key, meta = ckpts.restore(resume_step, layout.global_value(state), key_data)
        state = layout.from_global(restored)
        key_data = np.asarray(jax.device_get(saved_key), np.uint32)
        epoch, first_batch = meta["position"]["epoch"], meta["position"]["batch"]
        partial = meta.get("partial_sums")
        if meta.get("num_devices") != layout.num_shards:
            warnings.warn(f"{where} was trained on {meta.get('num_devices')} devices and resumes on "
                          f"{layout.num_shards}: the run goes on correctly, but not bit-identical to an "
                          "uninterrupted one (each device holds other data and draws other noise)", stacklevel=2)
        history = resume.read_history(metrics_path, epoch - 1)
    if workdir is not None and primary:
        (workdir / "config.json").write_text(config.to_json() + "\n")
        resume.write_history(metrics_path, history)

    eval_step = jax.jit(make_eval_step(parts.terms))
    test_data = _as_arrays(dataset.test)
    train_key, shuffle_key = _derive(key_data, TRAIN), _derive(key_data, SHUFFLE)
    eval_key = jax.random.wrap_key_data(_derive(key_data, EVAL))
    run_meta = {"config": config.to_dict(), "image_shape": list(dataset.image_shape),
                "num_classes": dataset.num_classes, "data_name": dataset.name,
                "data_fingerprint": data_fingerprint, "num_devices": layout.num_shards, "total_steps": steps_total}

    def record(entry: dict[str, Any]) -> None:
        history.append(entry)
        if metrics_path is not None and primary:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def test_entry(epoch: int) -> dict[str, Any]:
        params = layout.local_value(state.params)
        metrics = evaluate_dataset(eval_step, params, test_data, config.train.eval_batch_size, eval_key)
        return {"epoch": epoch, "split": "test", "step": epoch * steps_per_epoch, **metrics}

    def save(position: tuple[int, int], sums=None, metrics=None) -> None:
        start = time.perf_counter()
        step = ckpts.save(layout.global_value(state), key_data,
                          {**run_meta, "position": {"epoch": position[0], "batch": position[1]},
                           "partial_sums": sums}, metrics)
        record({"epoch": position[0] - 1 if position[1] == 0 else position[0], "split": "checkpoint",
                "step": step, "save_s": time.perf_counter() - start, "async": config.checkpoint.async_save})

    def check_finite(sums: dict[str, float], where: str) -> None:
        if config.train.on_nonfinite == "stop" and sums.get("nonfinite", 0.0) > 0:
            last = ckpts.latest_step() if ckpts is not None else None
            raise TrainingError(f"the training loss or gradient became non-finite (NaN/Inf) {where}; "
                                f"{'the last checkpoint (step ' + str(last) + ') is intact; ' if last is not None else ''}"
                                "lower train.learning_rate, check the data for NaN/Inf, or set "
                                "train.on_nonfinite=skip to skip such steps")

    if epoch == 1 and first_batch == 0:
        record(test_entry(0))
    bar = _progress(config.train.epochs * steps_per_epoch, (epoch - 1) * steps_per_epoch + first_batch,
                    progress and primary)
    try:
        with resume.StopSignals() as signals:
            while epoch <= config.train.epochs:
                start = time.perf_counter()
                perm = program.permute(shuffle_key, epoch)
                sums = None if partial is None else {k: jnp.float32(v) for k, v in partial.items()}
                partial = None
                for first, size in program.call_sizes(first_batch):
                    state, metrics = program.calls[size](state, program.data, perm, first, train_key)
                    sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
                    bar.update(size)
                    if first + size < steps_per_epoch and signals.requested():
                        host = {k: float(v) for k, v in jax.device_get(layout.local_value(sums)).items()}
                        check_finite(host, f"in epoch {epoch}")
                        if ckpts is not None:
                            save((epoch, first + size), host)
                        raise resume.Interrupted(signals.signum, int(layout.local_value(state.step)),
                                                 str(workdir) if workdir else None)
                first_batch = 0
                host = {k: float(v) for k, v in jax.device_get(layout.local_value(sums)).items()}
                check_finite(host, f"in epoch {epoch}")
                seconds = time.perf_counter() - start
                train = _epoch_means(host, steps_per_epoch)
                if train["skipped_steps"] == steps_per_epoch:
                    raise TrainingError(f"every step of epoch {epoch} was non-finite and skipped; "
                                        "lower train.learning_rate or check the data for NaN/Inf")
                record({"epoch": epoch, "split": "train", "step": epoch * steps_per_epoch, **train,
                        "seconds": seconds, "samples_per_s": steps_per_epoch * global_batch / seconds})
                test = test_entry(epoch)
                if not math.isfinite(test["neg_elbo"]):
                    raise TrainingError(f"the test ELBO became non-finite after epoch {epoch} (more than "
                                        f"train.max_consecutive_skips={config.train.max_consecutive_skips} non-finite "
                                        "steps in a row?); lower train.learning_rate or check the data for NaN/Inf")
                record(test)
                bar.set_postfix(train_neg_elbo=f"{train['neg_elbo']:.1f}", test_neg_elbo=f"{test['neg_elbo']:.1f}")
                stop = signals.requested()
                every = config.checkpoint.every_epochs
                if ckpts is not None and (stop or epoch == config.train.epochs or (every and epoch % every == 0)):
                    save((epoch + 1, 0), metrics={k: test[k] for k in ("neg_elbo", "recon", "kl")})
                if stop and epoch < config.train.epochs:
                    raise resume.Interrupted(signals.signum, int(layout.local_value(state.step)),
                                             str(workdir) if workdir else None)
                epoch += 1
    finally:
        bar.close()
        if ckpts is not None:
            ckpts.close()

    final = layout.local_value(state)
    if workdir is not None and primary:
        write_pictures(workdir, parts.model, final.params, config, dataset)
    return Run(config=config, model=parts.model, state=final, history=history, dataset=dataset)


@dataclasses.dataclass
class Loaded:
    """A trained run read back from its checkpoint."""

    model: VAE
    params: Any
    config: Config
    meta: dict[str, Any]
    step: int


def load_run(workdir: str | Path, which: str | int = "latest") -> Loaded:
    """The run in `workdir` at its "latest" or "best" (lowest test neg. ELBO) checkpoint, or a step."""
    if not checkpoint.check_workdir(workdir).is_dir():
        raise checkpoint.CheckpointError(f"run directory {str(workdir)!r} does not exist")
    with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
        step = ckpts.resolve(which)
        meta = ckpts.read_meta(step)
        config = from_dict(meta["config"])
        image_shape, num_classes = tuple(meta["image_shape"]), int(meta["num_classes"])
        parts = build(config, image_shape, num_classes)
        target = jax.eval_shape(lambda: init_for(parts, config, image_shape, num_classes))
        key = np.asarray(jax.random.key_data(base_key(0)))
        state, _, meta = ckpts.restore(step, target, key)
    return Loaded(model=parts.model, params=state.params, config=config, meta=meta, step=step)


def load(workdir: str | Path, which: str | int = "latest") -> tuple[VAE, Any, Config]:
    """(model, params, config) of the run in `workdir`, from its "latest" or "best" checkpoint (or a step)."""
    run = load_run(workdir, which)
    return run.model, run.params, run.config
