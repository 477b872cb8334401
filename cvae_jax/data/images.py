"""Data sets as host arrays, then held on the device for training.

Sources (config `data.source`):
  embedded  5,000 real MNIST digits shipped inside the package (4,000 train / 1,000 test)
  npz       a .npz file with x_train, y_train, x_test, y_test (images uint8 0-255 or float 0-1)
  idx       a folder of MNIST-format IDX files, served through a TF-free TFDS builder
  tfds      any prepared TFDS image data set by name, through `tfds.data_source`
  series    sliding windows [window, 1, 1] of a training and a test series (CSV files)
  sprites   the dSprites factor grid, rendered (cvae_jax.data.sprites), or the original file at data.path

Images come out as float32 [N, H, W, C] in [0, 1], or, where floats would not fit in memory (the
sprites' training split), uint8 0-255 that the objective divides on the device; labels as int32 [N].
Only this module (and `tfds_idx`, which it imports lazily) touches tensorflow-datasets.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from pathlib import Path

import numpy as np

from cvae_jax.config import ConfigError, DataConfig
from cvae_jax.data.errors import DataError  # noqa: F401 (raised here, and imported from here by users)


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # float32 [N, H, W, C] in [0, 1] (or uint8 0-255: see the module's docstring)
    labels: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.images)


@dataclasses.dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    num_classes: int
    name: str
    validation: Split | None = None  # a data set's own validation split, or one held out of train

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def hold_out(dataset: Dataset, share: float, seed: int) -> Dataset:
    """`dataset` with `share` of its training examples moved to a validation split (a seeded random
    choice, the same for the same seed), unless it has a validation split already or share is 0."""
    if dataset.validation is not None or share <= 0:
        return dataset
    n = len(dataset.train)
    count = int(round(share * n))
    if not 0 < count < n:
        raise DataError(
            f"{dataset.name}: data.validation={share} of {n} training examples holds out {count}; "
            "choose a share that leaves examples on both sides"
        )
    order = np.random.default_rng([seed, 0x7A11D]).permutation(n)
    held, kept = np.sort(order[:count]), np.sort(order[count:])
    train, validation = (Split(dataset.train.images[i], dataset.train.labels[i]) for i in (kept, held))
    return dataclasses.replace(dataset, train=train, validation=validation)


def embedded_path() -> Path:
    """Path of the embedded digits (MNIST subset, CC BY-SA 3.0)."""
    return Path(str(importlib.resources.files("cvae_jax") / "assets" / "mnist5k.npz"))


def as_split(images, labels, where: str) -> Split:
    """Validates and normalizes raw arrays: uint8 0-255 or float 0-1 images, [N,H,W] or [N,H,W,C]."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"{where}: images must have shape [N, H, W] or [N, H, W, C], got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(
            f"{where}: labels must have shape [N] = [{images.shape[0]}] to match the images, got {labels.shape}"
        )
    if images.shape[0] == 0:
        raise DataError(f"{where}: no examples")
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise DataError(f"{where}: integer images must lie in 0..255, got {images.min()}..{images.max()}")
        images = images.astype(np.float32) / 255.0
    else:
        images = images.astype(np.float32)
        if not np.all(np.isfinite(images)):
            raise DataError(f"{where}: images contain NaN or Inf")
        if images.min() < 0.0 or images.max() > 1.0:
            raise DataError(
                f"{where}: float images must lie in [0, 1], got {images.min():.3g}..{images.max():.3g}; "
                "divide by 255 or rescale"
            )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DataError(f"{where}: labels must be non-negative integers, got dtype {labels.dtype}, min {labels.min()}")
    return Split(images=images, labels=labels.astype(np.int32))


def _finish(train: Split, test: Split, name: str, num_classes: int | None = None) -> Dataset:
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"{name}: train images {train.images.shape[1:]} and test images {test.images.shape[1:]} differ in shape"
        )
    seen = int(max(train.labels.max(), test.labels.max())) + 1
    num_classes = num_classes or seen
    if seen > num_classes:
        raise DataError(f"{name}: label {seen - 1} is out of range for {num_classes} classes")
    return Dataset(train=train, test=test, num_classes=num_classes, name=name)


def load_npz(path: str | os.PathLike) -> Dataset:
    """Loads x_train, y_train, x_test, y_test from a .npz file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; set data.path to a .npz file")
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zipfile/pickle errors: a corrupt or non-npz file
        raise DataError(f"cannot read {str(path)!r} as .npz ({type(e).__name__}: {e})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(
            f"{str(path)!r} lacks arrays {missing}; it has {sorted(arrays)}. "
            "Save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    train = as_split(arrays["x_train"], arrays["y_train"], f"{path.name} train")
    test = as_split(arrays["x_test"], arrays["y_test"], f"{path.name} test")
    return _finish(train, test, path.stem)


def _read_tfds_source(source, where: str) -> Split:
    """Reads every record of a TFDS data source into arrays, in chunks."""
    n = len(source)
    records = []
    for start in range(0, n, 4096):
        keys = list(range(start, min(n, start + 4096)))
        try:
            records.extend(source.__getitems__(keys))
        except TypeError:  # tfds.testing.mock_data sources only support single-item access
            records.extend(source[i] for i in keys)
    if not records:
        raise DataError(f"{where}: no examples")
    if "image" not in records[0]:
        raise DataError(f"{where}: records need an 'image' feature, got {sorted(records[0])}")
    images = np.stack([r["image"] for r in records])
    # Without a 'label' feature (e.g. celeb_a's attributes) every example is class 0: unconditional use.
    labels = np.array([r["label"] for r in records]) if "label" in records[0] else np.zeros(len(records), np.int64)
    return as_split(images, labels, where)


def _num_classes(source) -> int | None:
    info = getattr(source, "dataset_info", None)
    if info is not None and "label" not in getattr(info, "features", {}):
        return 1
    try:
        return int(info.features["label"].num_classes)
    except (AttributeError, KeyError, TypeError):
        return None


def load_tfds(
    name: str, *, data_dir: str = "", train_split: str = "train", test_split: str = "test", validation_split: str = ""
) -> Dataset:
    """Loads a prepared TFDS image data set through `tfds.data_source` (no TensorFlow needed), with
    its own validation split when `validation_split` names one."""
    import tensorflow_datasets as tfds

    kwargs = {"data_dir": data_dir} if data_dir else {}
    try:
        train_src = tfds.data_source(name, split=train_split, download=False, **kwargs)
        test_src = tfds.data_source(name, split=test_split, download=False, **kwargs)
    except Exception as e:  # tfds raises several types for missing/unprepared data sets
        raise DataError(
            f"cannot open TFDS data set {name!r} ({type(e).__name__}: {e}). This machine may be "
            "offline: prepare it first (tfds build), or use data.source=npz or idx"
        ) from None
    train = _read_tfds_source(train_src, f"{name}[{train_split}]")
    test = _read_tfds_source(test_src, f"{name}[{test_split}]")
    dataset = _finish(train, test, name, _num_classes(train_src))
    if not validation_split:
        return dataset
    try:
        source = tfds.data_source(name, split=validation_split, download=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - tfds raises several types for a missing split
        raise DataError(f"TFDS data set {name!r} has no split {validation_split!r} ({type(e).__name__}: {e})") from None
    return dataclasses.replace(dataset, validation=_read_tfds_source(source, f"{name}[{validation_split}]"))


def _idx_cache_dir(folder: Path) -> Path:
    """A TFDS data_dir keyed by the IDX files' names, sizes and times, so a changed file is re-read."""
    from cvae_jax.data import cache

    return cache.keyed_dir("tfds", sorted(folder.glob("*idx*")), extra=str(folder.resolve()))


def load_idx(folder: str | os.PathLike, *, data_dir: str = "", progress: bool = True) -> Dataset:
    """Loads MNIST-format IDX files from `folder` through the TF-free TFDS builder `IdxImages`;
    progress=False also turns TFDS's own progress bars off for the one-time preparation."""
    from cvae_jax.data import idx as tfds_idx

    folder = Path(folder)
    builder = tfds_idx.prepare(folder, Path(data_dir) if data_dir else _idx_cache_dir(folder), progress=progress)
    sources = builder.as_data_source()
    train = _read_tfds_source(sources["train"], f"{folder} train")
    test = _read_tfds_source(sources["test"], f"{folder} test")
    return _finish(train, test, folder.name, builder.info.features["label"].num_classes)


def load(cfg: DataConfig, progress: bool = True) -> Dataset:
    """The data set that `cfg` names (progress=False: no progress bars while preparing IDX files),
    with only its first data.num_train training examples when that is set."""
    dataset = _load(cfg, progress)
    if cfg.num_train > len(dataset.train):
        raise DataError(f"data.num_train={cfg.num_train} exceeds the {len(dataset.train)} training examples")
    if 0 < cfg.num_train < len(dataset.train):  # (a loader may keep only those itself: sprites renders no more)
        train = Split(dataset.train.images[: cfg.num_train], dataset.train.labels[: cfg.num_train])
        dataset = dataclasses.replace(dataset, train=train)
    return dataset


def _load(cfg: DataConfig, progress: bool) -> Dataset:
    if cfg.source == "embedded":
        return load_npz(embedded_path())
    if cfg.source == "npz":
        return load_npz(cfg.path)
    if cfg.source == "idx":
        return load_idx(cfg.path, data_dir=cfg.data_dir, progress=progress)
    if cfg.source == "tfds":
        return load_tfds(
            cfg.name,
            data_dir=cfg.data_dir,
            train_split=cfg.train_split,
            test_split=cfg.test_split,
            validation_split=cfg.validation_split,
        )
    if cfg.source == "series":
        from cvae_jax.data import series

        return series.load(cfg)
    if cfg.source == "sprites":
        from cvae_jax.data import sprites

        return sprites.load(cfg)
    raise ConfigError(f"data.source must be embedded, npz, idx, tfds, series or sprites, got {cfg.source!r}")
