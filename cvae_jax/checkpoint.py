"""Orbax checkpoints of a run: the train state plus JSON metadata (config, data shape, classes).

Only this module imports orbax. A checkpoint lives in `<workdir>/checkpoints/<step>/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.serialization
import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model it is restored into."""


def _manager(workdir: str | Path, max_to_keep: int = 3) -> ocp.CheckpointManager:
    directory = Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def save(workdir: str | Path, state, meta: dict[str, Any]) -> int:
    """Saves `state` (any pytree or flax struct) and `meta` at step int(state.step); returns the step."""
    step = int(jax.device_get(state.step))
    with _manager(workdir) as manager:
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
            meta=ocp.args.JsonSave(meta)))
        manager.wait_until_finished()
    return step


def latest_step(workdir: str | Path) -> int | None:
    if not (Path(workdir) / "checkpoints").is_dir():
        return None
    with _manager(workdir) as manager:
        return manager.latest_step()


def read_meta(workdir: str | Path, step: int | None = None) -> tuple[int, dict[str, Any]]:
    """The (step, metadata) of the latest (or given) checkpoint of `workdir`."""
    step = latest_step(workdir) if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {str(workdir)!r}: train there first (cvae-jax train --workdir ...)")
    with _manager(workdir) as manager:
        try:
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # orbax raises many types for unreadable files
            raise CheckpointError(f"cannot read checkpoint {step} in {str(workdir)!r}: {type(e).__name__}: {e}") from None
    return step, meta


def restore(workdir: str | Path, target, step: int):
    """Restores the state saved at `step` into the structure, shapes and dtypes of `target`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(target))
    with _manager(workdir) as manager:
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
        except Exception as e:
            raise CheckpointError(f"checkpoint {step} in {str(workdir)!r} does not fit this model "
                                  f"({type(e).__name__}: {e})") from None
    return flax.serialization.from_state_dict(target, restored)
