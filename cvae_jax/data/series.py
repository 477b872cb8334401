"""Time series as data for a (C)VAE: sliding windows in, point-wise scores out.

A window of length W is an "image" of shape (W, 1, 1), so the MLP encoder/decoder and the Gaussian
likelihood apply unchanged. Values are scaled to [0, 1] with the training series' range.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from cvae_jax.data.errors import DataError


def read_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A GutenTAG-style CSV (timestamp, value, is_anomaly; optionally .gz): (values [T], is_anomaly [T])."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"series file {str(path)!r} does not exist")
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
            table = np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {str(path)!r} as timestamp,value,is_anomaly CSV: {e}") from e
    if table.shape[1] != 3:
        raise DataError(f"{str(path)!r}: expected 3 columns (timestamp, value, is_anomaly), got {table.shape[1]}")
    if not np.all(np.isfinite(table[:, 1])):
        raise DataError(f"{str(path)!r}: the values contain NaN or Inf")
    return table[:, 1], table[:, 2].astype(bool)


def scaler(train_values: np.ndarray):
    """x -> (x - min) / (max - min) with the training range, clipped to [0, 1]."""
    lo, hi = float(np.min(train_values)), float(np.max(train_values))
    if hi <= lo:
        raise DataError(f"the training series is constant ({lo}); nothing to learn")
    return lambda x: np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def windows(values: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """Sliding windows [N, window, 1, 1] (as images) of a 1-D series, N = (T - window) // stride + 1."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise DataError(f"a series must be 1-D, got shape {values.shape}")
    if not 1 <= window <= len(values) or stride < 1:
        raise DataError(
            f"window={window} and stride={stride} must satisfy 1 <= window <= length {len(values)}, stride >= 1"
        )
    view = np.lib.stride_tricks.sliding_window_view(values, window)[::stride]
    return np.ascontiguousarray(view)[:, :, None, None]


def point_scores(window_scores: np.ndarray, length: int, window: int, stride: int = 1) -> np.ndarray:
    """Each point's score: the mean score of the windows that cover it, [length]."""
    window_scores = np.asarray(window_scores, np.float64)
    expected = (length - window) // stride + 1
    if window_scores.shape != (expected,):
        raise ValueError(
            f"expected {expected} window scores for length {length}, window {window}, stride {stride}; "
            f"got {window_scores.shape}"
        )
    total, count = np.zeros(length), np.zeros(length)
    starts = np.arange(expected) * stride
    for offset in range(window):
        np.add.at(total, starts + offset, window_scores)
        np.add.at(count, starts + offset, 1.0)
    return total / np.maximum(count, 1.0)


GUTENTAG_ECG = "ecg-diff-count-3"


def gutentag_ecg(split: str, folder: str | Path | None = None) -> Path:
    """The GutenTAG synthetic ECG series `split` ("TRAIN_NA", "TRAIN_A" or "TEST"): from `folder`
    (`.csv` or `.csv.gz`), or else from the aeon wheel, which ships it as unit-test data
    (`pip install --no-deps aeon==1.6.0`; found without importing the package)."""
    import importlib.util

    names = [f"{GUTENTAG_ECG}_{split}.csv", f"{GUTENTAG_ECG}_{split}.csv.gz"]
    if folder is not None:
        candidates = [Path(folder) / name for name in names]
    else:
        spec = importlib.util.find_spec("aeon")
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        candidates = [Path(root) / "datasets" / "data" / "UnitTest" / name for root in roots for name in names]
    for path in candidates:
        if path.is_file():
            return path
    where = f"in {str(folder)!r}" if folder is not None else "in an installed aeon package"
    raise DataError(
        f"no {names[0]} (or .gz) {where}: install the aeon wheel that ships it with "
        "`pip install --no-deps aeon==1.6.0`, or pass the folder holding the files"
    )


def load(cfg):
    """The `data.source=series` data set of a DataConfig: windows of the training series (data.path) and
    of the test series (data.test_path), scaled with the training series' range, labels 0 (one class);
    both paths "" read the GutenTAG ECG series TRAIN_NA and TEST from the aeon wheel."""
    from cvae_jax.data.images import Dataset, Split

    if bool(cfg.path) != bool(cfg.test_path):
        raise DataError(
            "data.source=series needs both data.path (training CSV) and data.test_path (test CSV), or neither"
        )
    train_csv = cfg.path or gutentag_ecg("TRAIN_NA")
    test_csv = cfg.test_path or gutentag_ecg("TEST")
    train_values, _ = read_csv(train_csv)
    test_values, _ = read_csv(test_csv)
    scale = scaler(train_values)

    def split(values):
        w = windows(scale(values), cfg.window, cfg.stride).astype(np.float32)
        return Split(w, np.zeros(len(w), np.int32))

    return Dataset(train=split(train_values), test=split(test_values), num_classes=1, name=Path(train_csv).stem)
