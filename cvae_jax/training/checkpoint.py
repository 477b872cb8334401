"""Orbax checkpoints of a run, in `<workdir>/checkpoints/<step>/`. Only this module imports orbax.

A checkpoint holds two items:
  * "state": the train state (step, params, optimizer state) and the run's base PRNG key as raw key
    data (uint32), written by Orbax's StandardSave (replicated arrays are written once);
  * "meta": JSON — the config, data shape and classes, a fingerprint of the data set, the data
    position (next epoch and batch), partial epoch sums, the device count, the validation metrics
    (none without validation data), and a SHA-256 of the state's bytes, checked on every restore (so a
    damaged file never restores silently).

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a process
killed mid-save leaves the earlier checkpoints intact and the half-written one is never listed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from cvae_jax.config import CheckpointConfig


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not fit the model or run it is restored into."""


def _host(tree: Any) -> Any:
    """Host copy of a tree whose arrays are replicated (possibly over several processes)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x), tree)


def checksum(tree: Any) -> str:
    """SHA-256 over the bytes, shapes and dtypes of every leaf of `tree` (replicated), in tree order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(_host(tree)):
        a = np.ascontiguousarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _directory(workdir: str | Path) -> Path:
    return Path(workdir).absolute() / "checkpoints"


def file_in_the_way(folder: str | Path) -> Path | None:
    """The file (`folder` itself, or the nearest of its parents that exists) that keeps `folder` from
    being, or being made, a folder; None when there is none."""
    path = Path(folder)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def check_workdir(workdir: str | Path) -> Path:
    """`workdir` as a Path, refused (CheckpointError) when it, or a folder it would be made in, is a file."""
    path = Path(workdir)
    blocker = file_in_the_way(path)
    if blocker is not None:
        what = "is a file" if blocker == path else f"cannot be made: {str(blocker)!r} is a file"
        raise CheckpointError(f"run directory {str(path)!r} {what}; give --workdir a folder (new or a run's)")
    return path


class Checkpoints:
    """The checkpoints of one run directory: periodic (optionally async) saves, the last K plus the
    best by a validation metric, and checked restores. Use as a context manager, or call close().
    `read_only`: for reading a run (creates nothing, never saves)."""

    def __init__(
        self,
        workdir: str | Path,
        cfg: CheckpointConfig | None = None,
        *,
        read_only: bool = False,
        metric: str | None = None,
    ):
        cfg = cfg or CheckpointConfig()
        self.workdir, self.cfg, self.read_only = check_workdir(workdir), cfg, read_only
        # The metric that marks "best" (the task's selection_metric; by default cfg.best_metric).
        self.metric = cfg.best_metric if metric is None else metric
        keep: list[Any] = [policies.LatestN(n=cfg.keep)]
        if self.metric:
            metric = self.metric
            keep.append(
                policies.BestN(
                    get_metric_fn=lambda m: m[metric], reverse=True, n=1, keep_checkpoints_without_metrics=False
                )
            )
        options = ocp.CheckpointManagerOptions(
            create=not read_only,
            enable_async_checkpointing=cfg.async_save and not read_only,
            preservation_policy=policies.AnyPreservationPolicy(keep),
            cleanup_tmp_directories=not read_only,
        )
        if read_only and not _directory(workdir).is_dir():
            raise CheckpointError(
                f"no checkpoint in {str(workdir)!r}: train there first (cvae-jax train --workdir ...)"
            )
        self._manager = ocp.CheckpointManager(_directory(workdir), options=options)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def wait(self) -> None:
        """Blocks until an async save in flight is on disk."""
        self._manager.wait_until_finished()

    # -- saving -------------------------------------------------------------------------------------
    def save(self, state, key_data, meta: dict[str, Any], metrics: dict[str, float] | None = None) -> int:
        """Saves the state (a flax struct with .step), the base key data and `meta`; returns the step.

        Refuses a state with NaN/Inf values: a non-finite state is never written."""
        if self.read_only:
            raise CheckpointError(f"checkpoints of {str(self.workdir)!r} were opened read-only")
        tree = {"state": _state_dict(state), "key": key_data}
        host = _host(tree)
        bad = [
            jax.tree_util.keystr(p)
            for p, x in jax.tree_util.tree_leaves_with_path(host)
            if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.all(np.isfinite(x))
        ]
        if bad:
            raise CheckpointError(
                f"refusing to save a non-finite state (NaN/Inf in {bad[:3]}); the previous checkpoint is kept"
            )
        step = int(host["state"]["step"])
        meta = {**meta, "step": step, "checksum": checksum(host), "metrics": metrics}
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
            metrics=metrics,
            force=True,
        )
        return step

    # -- reading ------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def best_step(self) -> int:
        """The kept checkpoint with the lowest validation selection metric. A run without validation data
        has none: "best" never falls back to the test split (CheckpointError says what to do)."""
        scored = []
        for step in self.steps():
            meta = self.read_meta(step)
            metric, metrics = meta.get("selection_metric", self.metric), meta.get("metrics") or {}
            if metric in metrics:  # the metric the run selected by, saved with each checkpoint
                scored.append((metrics[metric], step))
        if not scored or not self._validated():
            raise CheckpointError(
                f"the run in {str(self.workdir)!r} has no 'best' checkpoint: it was trained without "
                "validation data, and the test split never chooses a checkpoint; use --checkpoint latest "
                "(or a step number), or train with validation rows (images: --set data.validation=0.1; "
                "molecules: --num-validation 1000)"
            )
        return min(scored)[1]

    def _validated(self) -> bool:
        """Whether the run's metrics.jsonl has validation lines (runs saved before selection read only
        validation also scored checkpoints by test when they had none)."""
        log = self.workdir / "metrics.jsonl"
        return log.is_file() and any(
            json.loads(line).get("split") == "validation" for line in log.open() if line.strip()
        )

    def resolve(self, which: str | int = "latest") -> int:
        """A step number from "latest", "best" or a step."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(
                f"no checkpoint in {str(self.workdir)!r}: train there first (cvae-jax train --workdir ...)"
            )
        if which == "latest":
            return steps[-1]
        if which == "best":
            return self.best_step()
        try:
            step = int(which)
        except (TypeError, ValueError):
            raise CheckpointError(
                f"checkpoint must be 'latest', 'best' or a step number (kept: {steps}), got {which!r}"
            ) from None
        if step not in steps:
            raise CheckpointError(f"no checkpoint at step {step} in {str(self.workdir)!r}; kept steps: {steps}")
        return step

    def read_meta(self, step: int) -> dict[str, Any]:
        try:
            return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # orbax raises many types for unreadable files
            raise CheckpointError(
                f"cannot read checkpoint {step} in {str(_directory(self.workdir))!r} "
                f"({type(e).__name__}: {e}); it is damaged — delete that step's folder to "
                "fall back to an earlier checkpoint"
            ) from None

    def restore(self, step: int, target_state, target_key) -> tuple[Any, Any, dict[str, Any]]:
        """(state, key data, meta) saved at `step`, in the structure, shapes, dtypes and shardings of
        the targets (concrete or abstract). Raises CheckpointError if it does not fit or is damaged."""
        meta = self.read_meta(step)
        if "checksum" not in meta or "position" not in meta:
            raise CheckpointError(
                f"checkpoint {step} in {str(_directory(self.workdir))!r} was written by an older "
                "cvae_jax (no PRNG key, data position or checksum in it): it cannot be resumed or "
                "loaded by this version; train the run again in a new --workdir"
            )
        target = {"state": _state_dict(target_state), "key": target_key}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            tree = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))[
                "state"
            ]
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {step} in {str(_directory(self.workdir))!r} cannot be restored into "
                f"this model ({type(e).__name__}: {str(e)[:500]}); it is damaged or from another "
                "architecture"
            ) from None
        if checksum(tree) != meta.get("checksum"):
            raise CheckpointError(
                f"checkpoint {step} in {str(_directory(self.workdir))!r} is damaged: its arrays do "
                "not match the checksum written with them; delete that step's folder to fall back "
                "to an earlier checkpoint"
            )
        state = _from_state_dict(target_state, tree["state"])
        return state, tree["key"], meta


def _state_dict(state) -> dict[str, Any]:
    import flax.serialization

    return flax.serialization.to_state_dict(state)


def _from_state_dict(target, values):
    import flax.serialization

    return flax.serialization.from_state_dict(target, values)


def has_checkpoint(workdir: str | Path) -> bool:
    """True if `workdir` holds at least one complete checkpoint."""
    directory = _directory(workdir)
    if not directory.is_dir():
        return False
    with Checkpoints(workdir, read_only=True) as ckpts:
        return bool(ckpts.steps())
