"""What makes a stopped run resumable, and stopping it cleanly.

* `check_resumable(meta, task, run_meta, where)`: names every difference between a checkpoint and
  the task asking to resume it that forbids resuming (`kl_cycle_change`: a cyclical KL schedule
  that would stretch mid-run);
* `StopSignals`: SIGTERM/SIGINT set a flag that the epoch loop checks between compiled calls, so the
  run saves a checkpoint and stops with `Interrupted` instead of dying mid-step;
* `read_history` / `write_history`: metrics.jsonl, cut back to the checkpoint being resumed.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; running it again resumes."""

    def __init__(self, signum: int, step: int, workdir: str | None):
        self.signum, self.step, self.workdir = signum, step, workdir
        name = signal.Signals(signum).name
        where = f"; checkpoint saved in {workdir}, run the same command to resume" if workdir else ""
        super().__init__(f"stopped by {name} at step {step}{where}")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': value} for a nested dict (tuples as lists, as JSON gives them back)."""
    out = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = list(value) if isinstance(value, tuple) else value
    return out


def differences(saved: dict[str, Any], wanted: dict[str, Any], resumable: tuple[str, ...]) -> list[str]:
    """'field: saved -> wanted' for every field of two nested settings dicts that differs and whose
    name does not start with one of `resumable` (a long value is only named, not printed)."""
    a, b = flatten(saved), flatten(wanted)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}" if len(repr(a.get(k))) < 80 else f"{k} differs"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and not k.startswith(resumable)
    ]


def kl_cycle_change(saved, saved_total: int, wanted, wanted_total: int) -> str | None:
    """Why resuming would change a run's KL cycles from here on (None if it would not): the default
    cycle length is the run's steps / num_cycles, so training a run on with more epochs would stretch
    its cycles mid-run. `saved` and `wanted` are TrainConfigs; the totals count each run's steps."""
    from cvae_jax.core.objectives import kl_period

    before, after = kl_period(saved, saved_total), kl_period(wanted, wanted_total)
    if before is None or after is None or before == after:
        return None
    return (
        f"its KL cycles are {before:g} steps long ({saved.num_cycles} cycles over {saved.epochs} epochs) and "
        f"would be {after:g} steps from here on. To train on with its cycles as they are, set "
        f"train.cycle_steps={before!r} (--set train.cycle_steps={before!r}); to spread train.num_cycles over "
        "the new length, start a new workdir"
    )


def lr_decay_change(saved, saved_total: int, wanted, wanted_total: int) -> str | None:
    """Why resuming would change a run's learning-rate decay from here on (None if it would not): a
    cosine or linear decay spans the run's steps, so training on with more epochs would stretch it."""
    if saved.lr_schedule == "constant" or saved_total == wanted_total:
        return None
    return (
        f"its learning rate decays ({saved.lr_schedule}) over {saved_total} steps and would decay over "
        f"{wanted_total} from here on; train a new run (a new --workdir) of the length you want"
    )


def check_resumable(meta: dict[str, Any], task, run_meta: dict[str, Any], where: str) -> None:
    """Raises CheckpointError naming what differs between a checkpoint's `meta` and the run asking
    to resume it (`task`, whose `run_meta` holds its config, data fingerprint and total steps)."""
    from cvae_jax.training.checkpoint import CheckpointError

    if meta.get("task") != run_meta.get("task"):
        raise CheckpointError(
            f"{where} holds a run of another kind ({meta.get('task') or 'images'}, not "
            f"{run_meta.get('task') or 'images'}); use a new --workdir"
        )
    saved = task.config_from_dict(meta["config"])
    diffs = differences(saved.to_dict(), task.config.to_dict(), task.resumable)
    if diffs:
        raise CheckpointError(
            f"{where} holds a run with another config, so it cannot be resumed with this one: "
            f"{'; '.join(diffs)}. Resume with the saved settings (cvae-jax train --workdir "
            "with no model flags) or start a new --workdir"
        )
    total_steps, wanted = run_meta["total_steps"], task.config
    saved_total = meta.get("total_steps") or total_steps * saved.train.epochs // wanted.train.epochs
    change = kl_cycle_change(saved.train, saved_total, wanted.train, total_steps) or lr_decay_change(
        saved.train, saved_total, wanted.train, total_steps
    )
    if change:
        raise CheckpointError(f"{where} cannot be resumed with these settings: {change} (nothing there was changed)")
    if meta.get("data_fingerprint") != run_meta["data_fingerprint"]:
        raise CheckpointError(
            f"{where} was trained on other data (data fingerprint "
            f"{str(meta.get('data_fingerprint'))[:12]} vs {run_meta['data_fingerprint'][:12]} now; "
            f"{task.data_description()}); resume with the same data or start a new --workdir"
        )


def read_history(path: Path, completed_epochs: int) -> list[dict[str, Any]]:
    """The metrics.jsonl entries of epochs 0..completed_epochs (later ones are redone on resume)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a hard kill
        if entry.get("epoch", 0) <= completed_epochs:
            entries.append(entry)
    return entries


def write_history(path: Path, entries: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
    tmp.replace(path)


class StopSignals:
    """While active, SIGTERM and SIGINT only set `signum`; the loop polls `requested()`.

    Handlers are installed only in the main thread (elsewhere signals keep their behaviour), and the
    previous handlers come back on exit. With several processes, `requested()` is true in all of them
    as soon as any one got a signal, so they stop at the same step."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def requested(self) -> bool:
        import jax

        if jax.process_count() == 1:
            return self.signum is not None
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
        got = [int(f) for f in np.ravel(flags) if f]
        if got and self.signum is None:
            self.signum = got[0]
        return bool(got)
