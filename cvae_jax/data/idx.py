"""A TF-free TFDS builder for MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST, ...).

The files are read from the builder's `manual_dir`:
  train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz   -> split "train"
  t10k-images-idx3-ubyte.gz,  t10k-labels-idx1-ubyte.gz    -> split "test" (prefix "test" also works)
(uncompressed files without `.gz` work too). Prepared as ArrayRecord, read with `as_data_source()`.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from cvae_jax.data.errors import DataError

_SPLIT_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(DataError):
    """An IDX file is missing or malformed."""


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx_header(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    with _open(path) as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
            raise IdxError(f"{path} is not an IDX file (bad magic number {magic.hex()})")
        dims = np.frombuffer(f.read(4 * magic[3]), ">u4")
        if len(dims) != magic[3]:
            raise IdxError(f"{path} is truncated in its header")
    return np.dtype(_IDX_DTYPES[magic[2]]), tuple(int(d) for d in dims)


def read_idx(path: Path) -> np.ndarray:
    """Reads a whole IDX file into an array of its declared dtype and shape."""
    dtype, shape = read_idx_header(path)
    try:
        with _open(path) as f:
            f.read(4 + 4 * len(shape))
            data = f.read()
    except (OSError, EOFError) as e:
        raise IdxError(f"cannot read {path}: {e}") from None
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise IdxError(
            f"{path} holds {len(data)} data bytes, its header {shape} needs {expected}: truncated or corrupt"
        )
    return np.frombuffer(data, dtype).reshape(shape)


def find_split_files(folder: Path, split: str) -> tuple[Path, Path]:
    """The (images, labels) IDX files of `split` in `folder`."""
    for prefix in _SPLIT_PREFIXES[split]:
        for suffix in (".gz", ""):
            images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
            labels = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                return images, labels
    raise IdxError(
        f"no {split} IDX files in {folder}: expected {_SPLIT_PREFIXES[split][0]}-images-idx3-ubyte.gz "
        f"and {_SPLIT_PREFIXES[split][0]}-labels-idx1-ubyte.gz"
    )


class IdxImages(tfds.core.GeneratorBasedBuilder):
    """MNIST-format IDX image/label files from a local folder (`manual_dir`)."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place train-/t10k- images-idx3-ubyte.gz and labels-idx1-ubyte.gz files in manual_dir."
    )

    def __init__(self, *, manual_dir: Path, **kwargs):
        self._manual_dir = Path(manual_dir)
        images, labels = find_split_files(self._manual_dir, "train")
        _, shape = read_idx_header(images)
        if len(shape) != 3:
            raise IdxError(f"{images} must hold [N, H, W] images, its header says {shape}")
        self._image_shape = (shape[1], shape[2], 1)
        self._num_classes = int(read_idx(labels).max()) + 1
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=self._image_shape, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=self._num_classes),
                }
            ),
            supervised_keys=("image", "label"),
        )

    # TFDS announces a preparation as "Downloading and preparing dataset ..." on stdout; nothing is
    # downloaded here, so say what happens instead, on stderr with the other progress messages.
    def _log_download_bytes(self) -> None:
        print(
            f"preparing the IDX files of {self._manual_dir} as TFDS array_record files in {self.data_dir} "
            "(once; later runs read those)",
            file=sys.stderr,
        )

    def _log_download_done(self) -> None:
        print(f"prepared {self.data_dir}", file=sys.stderr)

    def _split_generators(self, dl_manager):
        del dl_manager  # the files are local; manual_dir is given to the constructor
        return {split: self._generate_examples(split) for split in _SPLIT_PREFIXES}

    def _generate_examples(self, split: str):
        image_file, label_file = find_split_files(self._manual_dir, split)
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or images.shape[0] != labels.shape[0]:
            raise IdxError(f"{image_file} {images.shape} and {label_file} {labels.shape} do not match")
        if int(labels.max()) >= self._num_classes:
            raise IdxError(
                f"{label_file} has label {int(labels.max())}; the train split has {self._num_classes} classes"
            )
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image[..., None].astype(np.uint8), "label": int(label)}


def prepare(folder: Path, data_dir: Path, progress: bool = True) -> IdxImages:
    """Builds (once; later calls reuse the prepared files) and returns the builder for `folder`;
    progress=False turns TFDS's progress bars off while it prepares them."""
    if not folder.is_dir():
        raise IdxError(f"IDX folder {str(folder)!r} does not exist; set data.path to a folder of IDX files")
    builder = IdxImages(manual_dir=folder, data_dir=str(data_dir), file_format="array_record")
    # TFDS keeps its bars' on/off switch in a module global with no getter; read it where it lives
    # (assume on elsewhere) so that the caller's setting is put back afterwards.
    shown = getattr(getattr(getattr(tfds.core, "utils", None), "tqdm_utils", None), "_active", True)
    tfds.display_progress_bar(shown and progress)
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))
    finally:
        tfds.display_progress_bar(shown)
    return builder
