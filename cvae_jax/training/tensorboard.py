"""TensorBoard event files in the run directory (tensorboardX: no TensorFlow needed): a scalar for
every number of every metrics.jsonl line, as "<split>/<name>" at the line's step, and image grids of
samples and reconstructions when a run finishes. metrics.jsonl stays the record; the event files are
for watching (`tensorboard --logdir runs/`). train.tensorboard=false turns them off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SKIP = ("epoch", "step", "split")


class Scalars:
    """Writes metrics.jsonl lines as scalars; a no-op without a folder (a run without a workdir, or
    a process other than 0)."""

    def __init__(self, workdir: Path | None):
        self.writer = None
        if workdir is not None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(logdir=str(workdir), flush_secs=30)

    def write(self, entry: dict[str, Any]) -> None:
        if self.writer is None or "step" not in entry:
            return
        for name, value in entry.items():
            if name not in SKIP and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{entry.get('split', 'run')}/{name}", value, int(entry["step"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_images(workdir: Path, step: int, grids: dict[str, np.ndarray]) -> None:
    """Image grids [H, W, C] in [0, 1] (C = 1 or 3), each under its name, at `step`."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(logdir=str(workdir)) as writer:
        for name, grid in grids.items():
            picture = np.clip(np.asarray(grid, np.float32), 0.0, 1.0)
            writer.add_image(name, picture, step, dataformats="HWC")
