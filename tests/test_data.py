"""Data sources: the embedded digits, .npz files, IDX files through the TF-free TFDS builder, TFDS by name."""

import gzip
import subprocess
import sys

import numpy as np
import pytest

from cvae_jax.config import DataConfig
from cvae_jax.data import images as data


def test_embedded_digits_are_the_real_subset(digits):
    assert digits.train.images.shape == (4000, 28, 28, 1)
    assert digits.test.images.shape == (1000, 28, 28, 1)
    assert digits.num_classes == 10
    assert digits.train.images.dtype == np.float32
    assert 0.0 == digits.train.images.min() and digits.train.images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(digits.train.labels), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(digits.test.labels), np.full(10, 100))
    # Real digits: about 19% of MNIST pixels are ink (> 0.5).
    assert 0.1 < np.mean(digits.train.images > 0.5) < 0.3


def write_npz(path, n=20, **changes):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
        y_train=rng.integers(0, 3, n),
        x_test=rng.integers(0, 256, (5, 8, 8), dtype=np.uint8),
        y_test=rng.integers(0, 3, 5),
    )
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_npz_roundtrip_scales_uint8(tmp_path):
    arrays = write_npz(tmp_path / "d.npz")
    ds = data.load(DataConfig(source="npz", path=str(tmp_path / "d.npz")))
    np.testing.assert_allclose(ds.train.images[..., 0], arrays["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.test.labels, arrays["y_test"])
    assert ds.image_shape == (8, 8, 1)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"y_test": None}, "lacks arrays \\['y_test'\\]"),
        ({"y_train": np.zeros(3, int)}, "labels must have shape \\[N\\] = \\[20\\]"),
        ({"x_train": np.full((20, 8, 8), 2.0, np.float32)}, "float images must lie in \\[0, 1\\]"),
        ({"x_train": np.full((20, 8, 8), np.nan, np.float32)}, "NaN or Inf"),
        ({"x_test": np.zeros((5, 9, 9), np.uint8)}, "differ in shape"),
        ({"y_train": -np.ones(20, int)}, "non-negative integers"),
    ],
)
def test_bad_npz_gives_clear_errors(tmp_path, changes, message):
    write_npz(tmp_path / "d.npz", **changes)
    with pytest.raises(data.DataError, match=message):
        data.load_npz(tmp_path / "d.npz")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_npz(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    with pytest.raises(data.DataError, match="cannot read"):
        data.load_npz(tmp_path / "bad.npz")


def write_idx(path, array):
    dtype_code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, dtype_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def make_idx_folder(folder, n_train=30, n_test=12):
    rng = np.random.default_rng(1)
    folder.mkdir()
    arrays = {
        "train": (
            rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n_train).astype(np.uint8),
        ),
        "t10k": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test).astype(np.uint8)),
    }
    arrays["train"][1][0] = 9  # every class index up to 9 present in train
    for prefix, (images, labels) in arrays.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return arrays


def test_idx_files_through_tfds_builder(tmp_path, capfd):
    arrays = make_idx_folder(tmp_path / "idx")
    cfg = DataConfig(source="idx", path=str(tmp_path / "idx"), data_dir=str(tmp_path / "tfds"))
    ds = data.load(cfg)
    out, err = capfd.readouterr()
    assert "Downloading" not in out + err  # nothing is downloaded, and the message says so
    assert f"preparing the IDX files of {tmp_path / 'idx'}" in err
    assert ds.num_classes == 10
    # TFDS shuffles records when preparing: compare as a multiset of (label, image bytes).
    pixels = np.rint(ds.train.images[..., 0] * 255).astype(np.uint8)
    got = sorted(zip(ds.train.labels.tolist(), [p.tobytes() for p in pixels]))
    want = sorted(zip(arrays["train"][1].tolist(), [p.tobytes() for p in arrays["train"][0]]))
    assert got == want
    assert len(ds.test) == 12
    # A second load reuses the prepared files.
    assert (tmp_path / "tfds").is_dir()
    again = data.load(cfg)
    np.testing.assert_array_equal(np.sort(again.test.labels), np.sort(arrays["t10k"][1]))
    assert "preparing" not in capfd.readouterr().err


def test_idx_preparation_with_and_without_progress_bars(tmp_path, capfd):
    """TFDS's progress bars show while IDX files are prepared, unless progress=False (--no-progress)."""
    make_idx_folder(tmp_path / "idx")
    data.load_idx(tmp_path / "idx", data_dir=str(tmp_path / "with"))
    assert "Generating splits" in capfd.readouterr().err
    data.load_idx(tmp_path / "idx", data_dir=str(tmp_path / "without"), progress=False)
    err = capfd.readouterr().err
    assert "preparing the IDX files" in err and "Generating splits" not in err
    data.load_idx(tmp_path / "idx", data_dir=str(tmp_path / "again"))  # the setting was put back
    assert "Generating splits" in capfd.readouterr().err


def test_truncated_idx_file_is_reported(tmp_path):
    make_idx_folder(tmp_path / "idx")
    path = tmp_path / "idx" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(data.DataError, match="truncated or corrupt"):
        data.load_idx(tmp_path / "idx", data_dir=str(tmp_path / "tfds"))


def test_missing_idx_folder(tmp_path):
    with pytest.raises(data.DataError, match="no train IDX files|does not exist"):
        data.load_idx(tmp_path / "nothing", data_dir=str(tmp_path / "tfds"))


def test_tfds_by_name_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        ds = data.load(DataConfig(source="tfds", name="mnist"))
    assert ds.train.images.shape == (24, 28, 28, 1)
    assert ds.num_classes == 10
    assert 0.0 <= ds.train.images.min() and ds.train.images.max() <= 1.0


def test_tfds_colour_images_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        ds = data.load(DataConfig(source="tfds", name="cifar10"))
    assert ds.train.images.shape == (12, 32, 32, 3) and ds.test.images.shape == (12, 32, 32, 3)
    assert ds.num_classes == 10 and ds.train.images.dtype == np.float32
    assert 0.0 <= ds.train.images.min() and ds.train.images.max() <= 1.0


@pytest.mark.slow  # a fresh process
def test_data_path_does_not_import_tensorflow(tmp_path):
    make_idx_folder(tmp_path / "idx")
    code = (
        "import sys; from cvae_jax import data; "
        f"data.load_idx({str(tmp_path / 'idx')!r}, data_dir={str(tmp_path / 'tfds')!r}); "
        "import tensorflow_datasets as tfds\n"
        "with tfds.testing.mock_data(num_examples=4): data.load_tfds('mnist')\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_gutentag_series_are_found_in_a_folder_or_the_aeon_wheel_without_importing_it(tmp_path, monkeypatch):
    from cvae_jax.data import series

    rows = "timestamp,value,is_anomaly\n0,0.5,0\n1,0.25,1\n"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "ecg-diff-count-3_TEST.csv").write_text(rows)
    values, anomalous = series.read_csv(series.gutentag_ecg("TEST", tmp_path / "mine"))
    np.testing.assert_array_equal(values, [0.5, 0.25])
    np.testing.assert_array_equal(anomalous, [False, True])
    unit = tmp_path / "site" / "aeon" / "datasets" / "data" / "UnitTest"
    unit.mkdir(parents=True)
    (tmp_path / "site" / "aeon" / "__init__.py").write_text("raise ImportError('aeon must not be imported')\n")
    (unit / "ecg-diff-count-3_TRAIN_NA.csv").write_text(rows)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert series.gutentag_ecg("TRAIN_NA") == unit / "ecg-diff-count-3_TRAIN_NA.csv"
    with pytest.raises(data.DataError, match="pip install --no-deps aeon"):
        series.gutentag_ecg("TRAIN_A")
    with pytest.raises(data.DataError, match="mine"):
        series.gutentag_ecg("TRAIN_NA", tmp_path / "mine")
