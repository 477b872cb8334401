"""The one place derived data are cached: $CVAE_JAX_CACHE (default ~/.cache/cvae_jax), in folders keyed
by the source files' paths, sizes and modification times, so that a changed file is read again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def root() -> Path:
    return Path(os.environ.get("CVAE_JAX_CACHE", Path.home() / ".cache" / "cvae_jax"))


def keyed_dir(kind: str, files: list[Path], extra: str = "") -> Path:
    """root()/kind/<digest of the files' resolved paths, sizes and times, and `extra`>."""
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return root() / kind / hashlib.sha256(f"{stamp}|{extra}".encode()).hexdigest()[:16]
