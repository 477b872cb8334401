"""The one trainer: `fit(task, workdir)` trains any `Task` (images, series windows, molecules, yours).

A run directory holds config.json, metrics.jsonl (one JSON object per line: a "train" and a "test"
line per epoch, a "checkpoint" line per save) and Orbax checkpoints in checkpoints/ (see
`cvae_jax.training.checkpoint`), plus what the task's `finish` writes (an image run's pictures).

Every task gets the same: data-parallel devices and hosts, checkpoints and bit-identical resume,
SIGTERM/SIGINT handling, the NaN policy (train.on_nonfinite), microbatching, fused epochs, the
progress bar and metrics.jsonl.
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

from cvae_jax.config import ConfigError
from cvae_jax.training import checkpoint, lock, parallel, resume, trackers
from cvae_jax.training.program import make_program
from cvae_jax.training.step import (
    EVAL,
    SHUFFLE,
    TRAIN,
    TrainState,
    base_key,
    evaluate_dataset,
    evaluation_params,
    make_eval_step,
)
from cvae_jax.training.tasks import Parts, Task


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to change."""


@dataclasses.dataclass
class Fitted:
    """What `fit` returns: the task's parts, the final state (one device's copy) and the history
    (the metrics.jsonl entries, resumed runs included)."""

    parts: Parts
    state: TrainState
    history: list[dict[str, Any]]


@dataclasses.dataclass
class _Position:
    """Where training stands: the next epoch and batch, and the partial sums of an epoch cut short."""

    epoch: int = 1
    batch: int = 0
    partial: dict[str, float] | None = None


class _Log:
    """The run's history: kept in memory, and appended to metrics.jsonl by process 0."""

    def __init__(self, workdir: Path | None, primary: bool, history: list[dict[str, Any]], config):
        self.path = workdir / "metrics.jsonl" if workdir is not None and primary else None
        self.history = history
        names = (["tensorboard"] if config.train.tensorboard else []) + list(config.train.trackers)
        self.scalars = trackers.Trackers(names, workdir if self.path is not None else None, config.to_dict())
        if self.path is not None:
            resume.write_history(self.path, history)

    def record(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        self.scalars.log(entry)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")


def _derive(key_data: np.ndarray, purpose: int) -> np.ndarray:
    """Raw key data of fold_in(base key, purpose)."""
    return np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(key_data), purpose)))


def _record_start(workdir: Path, resume_step: int | None) -> None:
    """Appends this start's commit, command, host and resume step to the run's provenance.jsonl (what a
    model card of the run names)."""
    from cvae_jax import provenance

    entry = {**provenance.stamp(), "resumed_from_step": resume_step}
    with open(workdir / "provenance.jsonl", "a") as f:
        f.write(provenance.portable(json.dumps(entry)) + "\n")


def _steps_per_call(task: Task, steps_per_epoch: int) -> int:
    """train.steps_per_call, or auto: a whole epoch per call (docs/performance.md), or
    checkpoint.every_steps where that is fewer, so that a call ends at every save."""
    configured = task.config.train.steps_per_call or task.config.checkpoint.every_steps or steps_per_epoch
    return min(configured, steps_per_epoch)


def _check_batch(task: Task, global_batch: int, num_shards: int) -> None:
    n = len(next(iter(task.train_rows.values())))
    if global_batch > n - n % num_shards:
        raise ConfigError(
            f"train.batch_size={global_batch} is larger than the {n} training examples (the global batch "
            f"over {num_shards} device(s)); use --batch-size {(n // num_shards) * num_shards} or less"
        )


def _epoch_means(sums: dict[str, float], steps: int) -> dict[str, float]:
    """Per-step means of the loss metrics over the finite steps, and the count of skipped steps."""
    skipped = int(round(sums.pop("nonfinite", 0.0)))
    finite = steps - skipped
    out = {name: (float(value) / finite if finite else float("nan")) for name, value in sums.items()}
    out["skipped_steps"] = skipped
    return out


def _check_finite(task: Task, sums: dict[str, float], where: str, ckpts) -> None:
    if task.config.train.on_nonfinite == "stop" and sums.get("nonfinite", 0.0) > 0:
        last = ckpts.latest_step() if ckpts is not None else None
        kept = f"the last checkpoint (step {last}) is intact; " if last is not None else ""
        raise TrainingError(
            f"the training loss or gradient became non-finite (NaN/Inf) {where}; {kept}"
            "lower train.learning_rate, check the data for NaN/Inf, or set "
            "train.on_nonfinite=skip to skip such steps"
        )


def _early_stop_due(history: list[dict[str, Any]], patience: int, metric: str = "neg_elbo") -> bool:
    """Whether `patience` epochs have passed since the best validation `metric` in `history` (which a
    resumed run reads back from metrics.jsonl, so a resume stops where the run would have)."""
    if patience <= 0 or not metric:
        return False
    scores = [line[metric] for line in history if line["split"] == "validation" and line["epoch"] > 0]
    return len(scores) > patience and min(scores[-patience:]) >= min(scores[:-patience])


def _check_terms(task: Task, split: str, terms: dict[str, float], epoch: int) -> None:
    """The non-finite policy for evaluation, and the selection metric among the task's terms."""
    metric = task.selection_metric
    if split == "validation" and metric and metric not in terms:
        raise ConfigError(
            f"the task's selection_metric {metric!r} is not one of its terms ({', '.join(sorted(terms))}); "
            "set selection_metric (or checkpoint.best_metric) to one of them, or '' to keep no best checkpoint"
        )
    bad = sorted(name for name, value in terms.items() if not math.isfinite(value))
    if bad and epoch > 0:
        raise TrainingError(
            f"the {split} terms {', '.join(bad)} became non-finite after epoch {epoch} (more than "
            f"train.max_consecutive_skips={task.config.train.max_consecutive_skips} non-finite steps in a "
            "row?); lower train.learning_rate or check the data for NaN/Inf"
        )


def _scores(lines: list[dict[str, Any]]) -> dict[str, float] | None:
    """What a checkpoint is scored by: the validation line's terms, or None without validation rows,
    so that no checkpoint is "best" (selection never reads the test split)."""
    chosen = next((line for line in lines if line["split"] == "validation"), None)
    if chosen is None:
        return None
    return {k: v for k, v in chosen.items() if k not in ("epoch", "split", "step") and isinstance(v, float)}


def _shown(metric: str, train: dict[str, float], lines: list[dict[str, Any]]) -> dict[str, str]:
    """The progress bar's numbers: the selection metric (else the first term) of each split."""
    name = metric if metric in train else next(k for k in train if k not in ("epoch", "split", "step"))
    shown = {f"train_{name}": f"{train[name]:.1f}"}
    shown.update({f"{line['split']}_{name}": f"{line[name]:.1f}" for line in lines if name in line})
    return shown


def _restore(ckpts, step: int, layout, state, key_data, where: str):
    """The state (in `layout`), key data and position saved at `step`."""
    restored, saved_key, meta = ckpts.restore(step, layout.global_value(state), key_data)
    if meta.get("num_devices") != layout.num_shards:
        warnings.warn(
            f"{where} was trained on {meta.get('num_devices')} devices and resumes on "
            f"{layout.num_shards}: the run goes on correctly, but not bit-identical to an "
            "uninterrupted one (each device holds other data and draws other noise)",
            stacklevel=3,
        )
    position = _Position(meta["position"]["epoch"], meta["position"]["batch"], meta.get("partial_sums"))
    return layout.from_global(restored), np.asarray(jax.device_get(saved_key), np.uint32), position


def fit(task: Task, workdir: str | Path | None = None, *, progress: bool = True) -> Fitted:
    """Trains `task` on all its devices, with a test line per epoch; with a `workdir`, writes
    metrics and Orbax checkpoints there and resumes the run it already holds, bit-identical to a
    run that never stopped (same device count). SIGTERM/SIGINT save and raise `resume.Interrupted`.
    With several processes every process calls this; only process 0 writes logs. A second process
    training in the same `workdir` is refused at once (`lock.WorkdirInUse`, naming the first)."""
    workdir = checkpoint.check_workdir(workdir) if workdir is not None else None
    if workdir is None or not parallel.is_primary():
        return _fit(task, workdir, progress)
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with lock.WorkdirLock(workdir):
            return _fit(task, workdir, progress)
    except BaseException:
        if created and [p.name for p in workdir.iterdir()] == [".lock"]:  # a failed start leaves nothing
            (workdir / ".lock").unlink()
            workdir.rmdir()
        raise


def _fit(task: Task, workdir: Path | None, progress: bool) -> Fitted:
    """fit, once the run directory is this process's."""
    config, primary = task.config, parallel.is_primary()
    layout = parallel.make_layout(config.parallel)
    global_batch = parallel.global_batch_size(config.train.batch_size, config.parallel, layout.num_shards)
    _check_batch(task, global_batch, layout.num_shards)

    # Setup: the data on the devices, the compiled program, the fresh state and the run's identity
    # (fit made the run directory).
    metric = task.selection_metric
    ckpts = checkpoint.Checkpoints(workdir, config.checkpoint, metric=metric) if workdir is not None else None
    rows = parallel.shard_rows(task.train_rows, layout.num_shards, layout.local_shards, config.seed)
    steps_per_epoch = len(next(iter(rows.values()))[0]) // (global_batch // layout.num_shards)
    total_steps = steps_per_epoch * config.train.epochs
    run_meta = {
        "config": config.to_dict(),
        **task.meta(),
        "data_fingerprint": task.fingerprint(),
        "num_devices": layout.num_shards,
        "total_steps": total_steps,
        "selection_metric": metric,
    }
    log = None
    try:
        resume_step = ckpts.latest_step() if ckpts is not None else None
        if resume_step is not None:  # refused before anything is compiled
            resume.check_resumable(ckpts.read_meta(resume_step), task, run_meta, repr(str(workdir)))
        parts = task.build(total_steps)
        program = make_program(
            layout,
            parts.loss,
            parts.tx,
            rows,
            global_batch,
            lambda steps: _steps_per_call(task, steps),
            config.train.microbatches,
            config.train.unroll_microbatches,
        )
        state = layout.put_replicated(task.init(parts))
        key_data = np.asarray(jax.random.key_data(base_key(config.seed)))
        position = _Position()
        if resume_step is not None:
            state, key_data, position = _restore(ckpts, resume_step, layout, state, key_data, repr(str(workdir)))
        history = resume.read_history(workdir / "metrics.jsonl", position.epoch - 1) if resume_step is not None else []
        if workdir is not None and primary:
            (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
            _record_start(workdir, resume_step)
        log = _Log(workdir, primary, history, task.config)
        state = _train(
            task, parts, program, layout, state, key_data, position, log, ckpts, run_meta, progress and primary, workdir
        )
    finally:
        if ckpts is not None:
            ckpts.close()
        if log is not None:
            log.scalars.close()
    final = layout.local_value(state)
    if workdir is not None and primary:
        task.finish(workdir, parts, evaluation_params(final))
    return Fitted(parts=parts, state=final, history=log.history)


def _train(task, parts, program, layout, state, key_data, position, log, ckpts, run_meta, progress, workdir):
    """The epoch loop, from `position` to the last epoch; returns the final state."""
    loop = _Loop(task, parts, program, layout, state, key_data, log, ckpts, run_meta, workdir)
    return loop.run(position, progress)


class _Loop:
    """The epoch loop's parts, each small and on its own: one epoch's compiled calls, its evaluation,
    checkpointing, early stopping (`_early_stop_due`), signals and the non-finite policy
    (`_check_finite`, `_check_terms`)."""

    def __init__(self, task, parts, program, layout, state, key_data, log, ckpts, run_meta, workdir):
        self.task, self.parts, self.program, self.layout = task, parts, program, layout
        self.state, self.key_data, self.log, self.ckpts = state, key_data, log, ckpts
        self.run_meta, self.workdir = run_meta, workdir
        self.config = task.config
        self.eval_step = jax.jit(make_eval_step(parts.terms))
        self.train_key, self.shuffle_key = _derive(key_data, TRAIN), _derive(key_data, SHUFFLE)
        self.eval_key = jax.random.wrap_key_data(_derive(key_data, EVAL))
        self.patience = self.config.train.early_stopping_patience

    def evaluate(self, epoch: int) -> list[dict[str, Any]]:
        """The epoch's "validation" (when the task has validation rows) and "test" lines."""
        params = self.layout.local_value(evaluation_params(self.state))
        lines, steps = [], self.program.steps_per_epoch
        for split, rows in (("validation", self.task.validation_rows), ("test", self.task.test_rows)):
            if rows is not None:
                metrics = evaluate_dataset(
                    self.eval_step, params, rows, self.config.train.eval_batch_size, self.eval_key
                )
                _check_terms(self.task, split, metrics, epoch)
                lines.append({"epoch": epoch, "split": split, "step": epoch * steps, **metrics})
        lines[-1].update(self.task.on_epoch_end(epoch, self.parts, params))
        return lines

    def save(self, epoch: int, batch: int, sums=None, metrics=None) -> None:
        """A checkpoint at (epoch, batch), and its line in the log."""
        start = time.perf_counter()
        meta = {**self.run_meta, "position": {"epoch": epoch, "batch": batch}, "partial_sums": sums}
        step = self.ckpts.save(self.layout.global_value(self.state), self.key_data, meta, metrics)
        self.log.record(
            {
                "epoch": epoch - 1 if batch == 0 else epoch,
                "split": "checkpoint",
                "step": step,
                "save_s": time.perf_counter() - start,
                "async": self.config.checkpoint.async_save,
            }
        )

    def interrupted(self, signum: int) -> resume.Interrupted:
        step = int(self.layout.local_value(self.state.step))
        return resume.Interrupted(signum, step, str(self.workdir) if self.workdir else None)

    def host_sums(self, sums) -> dict[str, float]:
        return {k: float(v) for k, v in jax.device_get(self.layout.local_value(sums)).items()}

    def train_epoch(self, epoch: int, position: _Position, bar, signals) -> dict[str, float]:
        """One epoch of compiled calls (each resumable at its end) from `position`; its summed metrics.
        A stop signal between calls saves a mid-epoch checkpoint and raises Interrupted."""
        program, steps = self.program, self.program.steps_per_epoch
        perm = program.permute(self.shuffle_key, epoch)
        sums = None if position.partial is None else {k: jnp.float32(v) for k, v in position.partial.items()}
        for first, size in program.call_sizes(position.batch if epoch == position.epoch else 0):
            self.state, metrics = program.calls[size](self.state, program.data, perm, first, self.train_key)
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
            bar.update(size)
            if first + size == steps:
                break
            stop = signals.requested()
            if stop or self.steps_save_due(epoch, first, size):
                partial = self.host_sums(sums)
                _check_finite(self.task, partial, f"in epoch {epoch}", self.ckpts)
                if self.ckpts is not None:
                    self.save(epoch, first + size, partial)
            if stop:
                raise self.interrupted(signals.signum)
        position.partial = None
        totals = self.host_sums(sums)
        _check_finite(self.task, totals, f"in epoch {epoch}", self.ckpts)
        return totals

    def steps_save_due(self, epoch: int, first: int, size: int) -> bool:
        """Whether the call of `size` steps from batch `first` of `epoch` reached a multiple of
        checkpoint.every_steps."""
        every, before = self.config.checkpoint.every_steps, (epoch - 1) * self.program.steps_per_epoch + first
        return bool(every) and (before + size) // every > before // every

    def train_line(self, epoch: int, totals: dict[str, float], seconds: float) -> dict[str, Any]:
        """The epoch's "train" line (refused when every step was skipped as non-finite)."""
        steps = self.program.steps_per_epoch
        train = _epoch_means(totals, steps)
        if train["skipped_steps"] == steps:
            raise TrainingError(
                f"every step of epoch {epoch} was non-finite and skipped; "
                "lower train.learning_rate or check the data for NaN/Inf"
            )
        samples = steps * self.program.batch_per_shard * self.layout.num_shards
        line = {"epoch": epoch, "split": "train", "step": epoch * steps, **train}
        return {**line, "seconds": seconds, "samples_per_s": samples / seconds}

    def run(self, position: _Position, progress: bool) -> TrainState:
        from tqdm.auto import tqdm

        epochs, steps, metric = self.config.train.epochs, self.program.steps_per_epoch, self.task.selection_metric
        if position.epoch == 1 and position.batch == 0:
            for line in self.evaluate(0):
                self.log.record(line)
        initial = (position.epoch - 1) * steps + position.batch
        bar = tqdm(total=epochs * steps, initial=initial, unit="step", disable=not progress, dynamic_ncols=True)
        epoch = position.epoch
        with bar, resume.StopSignals() as signals:
            while epoch <= epochs and not _early_stop_due(self.log.history, self.patience, metric):
                start = time.perf_counter()
                totals = self.train_epoch(epoch, position, bar, signals)
                seconds = time.perf_counter() - start
                train = self.train_line(epoch, totals, seconds)
                self.log.record(train)
                lines = self.evaluate(epoch)
                for line in lines:
                    self.log.record(line)
                bar.set_postfix(_shown(metric, train, lines))
                done = epoch == epochs or _early_stop_due(self.log.history, self.patience, metric)
                stop, every = signals.requested(), self.config.checkpoint.every_epochs
                last_first, last_size = self.program.call_sizes()[-1]
                due = (every and epoch % every == 0) or self.steps_save_due(epoch, last_first, last_size)
                if self.ckpts is not None and (stop or done or due):
                    self.save(epoch + 1, 0, metrics=_scores(lines))
                if stop:  # in the last epoch too, once it is saved: the caller stops as asked
                    raise self.interrupted(signals.signum)
                epoch += 1
            if signals.requested():  # asked during the last save
                raise self.interrupted(signals.signum)
        return self.state
