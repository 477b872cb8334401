"""TensorBoard image grids of samples and reconstructions when a run finishes (tensorboardX: no
TensorFlow needed); the scalars of every metrics.jsonl line are the "tensorboard" tracker's
(`cvae_jax.training.trackers`). train.tensorboard=false turns both off."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def _import_tensorboardx():
    """tensorboardX, imported without PyTorch. Its writer imports torch whenever torch is installed
    (only to accept torch tensors, which cvae_jax never passes), and torch's import is a large part
    of a training process's start-up; an entry of None in `sys.modules` makes that optional import
    fail, as it would without torch. A process that has imported torch already keeps it."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX

        return tensorboardX
    sys.modules["torch"] = None
    try:
        import tensorboardX
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return tensorboardX


def summary_writer(workdir: Path, **kwargs):
    """A tensorboardX SummaryWriter on `workdir`, or an ImportError that says how to go on without it."""
    try:
        SummaryWriter = _import_tensorboardx().SummaryWriter
    except ImportError:
        raise ImportError(
            "TensorBoard event files (train.tensorboard=true, the default) need tensorboardX, a dependency "
            "of cvae-jax that this environment lacks (installed with --no-deps?): pip install tensorboardX, "
            "or train without them: --set train.tensorboard=false (and no 'tensorboard' in train.trackers)"
        ) from None
    return SummaryWriter(logdir=str(workdir), **kwargs)


def write_images(workdir: Path, step: int, grids: dict[str, np.ndarray]) -> None:
    """Image grids [H, W, C] in [0, 1] (C = 1 or 3), each under its name, at `step`."""
    with summary_writer(workdir) as writer:
        for name, grid in grids.items():
            picture = np.clip(np.asarray(grid, np.float32), 0.0, 1.0)
            writer.add_image(name, picture, step, dataformats="HWC")
