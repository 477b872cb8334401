"""The task interface: what the one trainer (`cvae_jax.training.trainer.fit`) needs to know about a
kind of data. Images, time-series windows and molecules are tasks; so is anything you write.

A task holds its config and its data as named arrays, and says:

* **rows**: `train_rows`, `test_rows` and optionally `validation_rows`, dicts of arrays with one
  row per example (`{"image", "label"}` for images, `{"tokens", "condition"}` for molecules). A
  batch is the same dict with `batch_size` rows, gathered on the device inside the compiled step.
  Validation rows choose the "best" checkpoint and early stopping; test rows are only reported;
* **the loss and its per-example terms**: `build(total_steps)` returns `Parts`: the Flax model,
  `terms(params, batch, key) -> {name: [B]}` (test metrics are their means; the terms may have any
  names, and `selection_metric` names the one that chooses "best" and stops early) and
  `loss(params, batch, key, step) -> (scalar, metrics)` (what is trained), and the optimizer;
* **the initial state**: `init(parts)` (only the shapes of an example batch matter);
* **what to measure or draw**: `on_epoch_end(epoch, parts, params)` returns extra test metrics
  for that epoch's line; `finish(workdir, parts, params)` writes pictures or files at the end.

Everything else (devices, checkpoints, exact resume, signals, the NaN policy, microbatching,
metrics.jsonl and the progress bar) is the trainer's, the same for every task. See docs/tasks.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cvae_jax.training.step import INIT, TrainState, fresh_state, purpose_key


@dataclasses.dataclass
class Parts:
    """The pieces a task builds: the model and the pure functions of (params, batch, key)."""

    model: Any
    terms: Callable  # (params, batch, key) -> per-example terms {name: [B]}
    loss: Callable  # (params, batch, key, step) -> (loss, metrics)
    tx: Any  # optax.GradientTransformation


def fingerprint_arrays(*arrays: np.ndarray, extra: str = "") -> str:
    """SHA-256 of arrays (bytes, shapes and dtypes) and an extra string: what a run's data is."""
    h = hashlib.sha256()
    for array in arrays:
        a = np.ascontiguousarray(array)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(extra.encode())
    return h.hexdigest()


class Task:
    """Base class of tasks. A subclass sets `config` (with `train`, `parallel`, `checkpoint` and `seed`
    sections, and `to_dict()`), `train_rows`, `test_rows`, and implements `build`."""

    name: str = "task"
    # Config fields (dotted prefixes) that may change when a saved run is resumed: how long it trains
    # and how it is executed. Anything else changes the model, the data or the optimization.
    resumable: tuple[str, ...] = (
        "train.epochs",
        "train.steps_per_call",
        "train.eval_batch_size",
        "train.cycle_steps",
        "parallel.",
        "checkpoint.",
    )
    # For `cvae-jax train --task`: the config's dataclass and named presets (functions returning a
    # config); `make_config` starts from one and applies `--set` overrides, `from_config` loads the data.
    config_class: type | None = None
    presets: dict[str, Callable[[], Any]] = {}
    config: Any
    train_rows: dict[str, np.ndarray]
    test_rows: dict[str, np.ndarray]
    validation_rows: dict[str, np.ndarray] | None = None

    @classmethod
    def make_config(cls, preset: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> Any:
        """The config of preset `preset` (the config class's defaults where there are no presets) with
        `section.field=value` overrides applied and validated."""
        from cvae_jax.config import ConfigError, apply_overrides

        presets = cls.presets or ({"default": cls.config_class} if cls.config_class else {})
        if preset not in presets:
            raise ConfigError(
                f"task {cls.name!r} has presets {sorted(presets)}, not {preset!r}"
                if presets
                else f"task {cls.name!r} sets no config_class, so it cannot be configured by name"
            )
        return apply_overrides(presets[preset](), list(overrides))

    @classmethod
    def from_config(cls, config: Any) -> Task:
        """The task of `config`, its data loaded (default: `cls(config)`)."""
        return cls(config)

    @classmethod
    def read_config(cls, saved: dict[str, Any], config_class: type | None = None) -> Any:
        """A config from a checkpoint's `to_dict()` output, nested sections rebuilt from the fields' types
        (of `config_class`, default the task's). Override it to read a task's older saved layouts."""
        from cvae_jax.config import from_dict

        return from_dict(saved, config_class or cls.config_class)

    @property
    def selection_metric(self) -> str:
        """The validation term (a name `terms` returns) whose lowest value marks the "best" checkpoint
        and drives early stopping: the config's `checkpoint.best_metric` ("neg_elbo" by default; ""
        keeps no best). A task whose terms have other names sets its own, as a class attribute."""
        return getattr(getattr(self.config, "checkpoint", None), "best_metric", "neg_elbo")

    def build(self, total_steps: int) -> Parts:
        raise NotImplementedError

    def example(self) -> dict[str, np.ndarray]:
        """Two rows of training data: the shapes `init` builds parameters for."""
        return {name: np.asarray(rows[:2]) for name, rows in self.train_rows.items()}

    def init(self, parts: Parts) -> TrainState:
        """Parameters and optimizer state at step 0, from the seed's INIT key. The default calls
        `parts.model.init(key, *model_inputs(example))`."""
        import jax

        return jax.jit(fresh_state(parts.model, parts.tx))(
            purpose_key(self.config.seed, INIT), *self.model_inputs(self.example())
        )

    def model_inputs(self, batch: dict[str, np.ndarray]) -> tuple:
        """The positional inputs of `model.init` for a batch (default: every array, in row order)."""
        return tuple(batch.values())

    def fingerprint(self) -> str:
        """A hash of the data the run trains and tests on, saved with every checkpoint: a run resumes
        only on the same data."""
        return fingerprint_arrays(*self.train_rows.values(), *self.test_rows.values())

    def meta(self) -> dict[str, Any]:
        """JSON saved with every checkpoint besides the config: what loading the model needs. A
        "task" entry names the kind of run (a run resumes only as the same kind)."""
        return {"task": self.name}

    def data_description(self) -> str:
        """Where the data came from, for messages (e.g. "data.source='npz', data.path='x.npz'")."""
        return f"{len(next(iter(self.train_rows.values())))} training rows"

    def config_from_dict(self, saved: dict[str, Any]) -> Any:
        """The config a checkpoint saved (its `to_dict()`), rebuilt with its nested sections (from the
        fields' types), to compare with this one (`read_config` with this config's class)."""
        return self.read_config(saved, type(self.config))

    def on_epoch_end(self, epoch: int, parts: Parts, params) -> dict[str, Any]:
        """Extra test metrics for the epoch's "test" line (computed in every process)."""
        del epoch, parts, params
        return {}

    def finish(self, workdir: Path, parts: Parts, params) -> None:
        """Pictures or files written once training is done (process 0 only, with a workdir)."""
        del workdir, parts, params
