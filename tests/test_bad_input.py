"""Bad input everywhere: each case must fail with a clear error that names the offending value,
before any work is done or any file is written."""

from __future__ import annotations

import numpy as np
import pytest

from cvae_jax.apps import evaluate, inference
from cvae_jax.config import ConfigError, apply_overrides, get_config
from cvae_jax.data import images as data
from cvae_jax.data.images import DataError
from cvae_jax.tasks.images import build, init_for, load, train_and_evaluate
from cvae_jax.training.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def cvae(small_digits):
    cfg = apply_overrides(
        get_config("cvae"), ["model.latent_dim=3", "model.encoder_hidden=16", "model.decoder_hidden=16"]
    )
    parts = build(cfg, small_digits.image_shape, small_digits.num_classes)
    return parts.model, init_for(parts, cfg, small_digits.image_shape, small_digits.num_classes).params


def _npz(tmp_path, **arrays) -> str:
    rng = np.random.default_rng(0)
    base = {
        "x_train": rng.integers(0, 256, (20, 8, 8), np.uint8),
        "y_train": np.arange(20) % 4,
        "x_test": rng.integers(0, 256, (10, 8, 8), np.uint8),
        "y_test": np.arange(10) % 4,
    }
    base.update(arrays)
    path = tmp_path / "d.npz"
    np.savez(path, **base)
    return str(path)


def _with_labels(ds: data.Dataset, labels) -> data.Dataset:
    return data.Dataset(
        train=data.Split(ds.train.images, np.asarray(labels, np.int32)),
        test=ds.test,
        num_classes=ds.num_classes,
        name="bad",
    )


def _train(small_digits, *overrides, dataset=None, workdir=None):
    cfg = apply_overrides(
        get_config("cvae"), ["train.epochs=1", "model.encoder_hidden=16", "model.decoder_hidden=16", *overrides]
    )
    return train_and_evaluate(cfg, workdir, dataset=dataset or small_digits, progress=False)


CASES = [
    # invalid config values
    (
        "negative beta",
        lambda c, d, t: apply_overrides(get_config(), ["train.beta=-0.5"]),
        ConfigError,
        r"train.beta must be >= 0, got -0.5",
    ),
    (
        "latent size 0",
        lambda c, d, t: apply_overrides(get_config(), ["model.latent_dim=0"]),
        ConfigError,
        r"model.latent_dim must be >= 1, got 0",
    ),
    (
        "zero learning rate",
        lambda c, d, t: apply_overrides(get_config(), ["train.learning_rate=0"]),
        ConfigError,
        r"train.learning_rate must be > 0",
    ),
    (
        "unknown field",
        lambda c, d, t: apply_overrides(get_config(), ["model.latent=4"]),
        ConfigError,
        r"unknown config field 'model.latent'",
    ),
    (
        "unparsable value",
        lambda c, d, t: apply_overrides(get_config(), ["train.epochs=ten"]),
        ConfigError,
        r"cannot parse train.epochs='ten' as int",
    ),
    (
        "keep 0 checkpoints",
        lambda c, d, t: apply_overrides(get_config(), ["checkpoint.keep=0"]),
        ConfigError,
        r"checkpoint.keep must be >= 1",
    ),
    (
        "unknown nonfinite policy",
        lambda c, d, t: apply_overrides(get_config(), ["train.on_nonfinite=ignore"]),
        ConfigError,
        r"train.on_nonfinite must be one of",
    ),
    (
        "batch larger than the data",
        lambda c, d, t: _train(d, "train.batch_size=501"),
        ConfigError,
        r"train.batch_size=501 is larger than the 450 training examples",
    ),
    (
        "microbatches that do not divide the batch",
        lambda c, d, t: _train(d, "train.batch_size=50", "train.microbatches=3"),
        ConfigError,
        r"train.microbatches=3 must divide each device's batch of 50",
    ),
    # data files
    ("missing data file", lambda c, d, t: data.load_npz(t / "none.npz"), DataError, r"none.npz' does not exist"),
    (
        "not an npz",
        lambda c, d, t: (t / "x.npz").write_text("hello") and data.load_npz(t / "x.npz"),
        DataError,
        r"cannot read .*x.npz' as .npz",
    ),
    ("missing arrays", lambda c, d, t: data.load_npz(_npz_without(t)), DataError, r"lacks arrays \['y_test'\]"),
    (
        "images of the wrong rank",
        lambda c, d, t: data.load_npz(_npz(t, x_train=np.zeros((20, 64), np.uint8))),
        DataError,
        r"images must have shape \[N, H, W\] or \[N, H, W, C\], got \(20, 64\)",
    ),
    (
        "train and test shapes differ",
        lambda c, d, t: data.load_npz(_npz(t, x_test=np.zeros((10, 9, 9), np.uint8))),
        DataError,
        r"train images \(8, 8, 1\) and test images \(9, 9, 1\) differ",
    ),
    (
        "labels do not match images",
        lambda c, d, t: data.load_npz(_npz(t, y_train=np.arange(19))),
        DataError,
        r"labels must have shape \[N\] = \[20\]",
    ),
    (
        "negative labels",
        lambda c, d, t: data.load_npz(_npz(t, y_train=-np.ones(20, np.int64))),
        DataError,
        r"labels must be non-negative integers",
    ),
    (
        "NaN images in a file",
        lambda c, d, t: data.load_npz(_npz(t, x_train=np.full((20, 8, 8), np.nan, np.float32))),
        DataError,
        r"images contain NaN or Inf",
    ),
    (
        "float images outside [0, 1]",
        lambda c, d, t: data.load_npz(_npz(t, x_train=np.full((20, 8, 8), 255.0))),
        DataError,
        r"float images must lie in \[0, 1\], got 255..255",
    ),
    (
        "labels out of range",
        lambda c, d, t: _train(d, dataset=_with_labels(d, np.full(500, 12))),
        DataError,
        r"labels must lie in 0..9 \(num_classes=10\), got 12..12",
    ),
    # using a model
    (
        "wrong image shape",
        lambda c, d, t: inference.encode(*c, np.zeros((2, 32, 32, 1)), np.zeros((2, 10))),
        ValueError,
        r"images must have shape \[N, 28, 28, 1\] for this model, got \(2, 32, 32, 1\)",
    ),
    (
        "condition of the wrong width",
        lambda c, d, t: inference.encode(*c, np.zeros((2, 28, 28, 1)), np.zeros((2, 5))),
        ValueError,
        r"condition has width 5 but this model was trained with 10",
    ),
    (
        "condition rows differ",
        lambda c, d, t: inference.encode(*c, np.zeros((2, 28, 28, 1)), np.zeros((3, 10))),
        ValueError,
        r"condition must have shape \[2, 10\]",
    ),
    (
        "CVAE without a condition",
        lambda c, d, t: inference.encode(*c, np.zeros((2, 28, 28, 1))),
        ValueError,
        r"CVAE needs a condition",
    ),
    (
        "latents of the wrong rank",
        lambda c, d, t: inference.decode_mean(*c, np.zeros(3), np.zeros((1, 10))),
        ValueError,
        r"latents must have shape \[N, latent_dim\], got \(3,\)",
    ),
    (
        "evaluation in chunks of 0",
        lambda c, d, t: evaluate.evaluate_model(*c, get_config("cvae"), d, chunk=0),
        ValueError,
        r"chunk must be a positive integer, got 0",
    ),
    (
        "evaluation of 0 examples",
        lambda c, d, t: evaluate.evaluate_model(*c, get_config("cvae"), d, num_examples=0),
        ValueError,
        r"num_examples must be a positive integer, got 0",
    ),
    # run directories
    ("missing run directory", lambda c, d, t: load(t / "no_run"), CheckpointError, r"no_run' does not exist"),
    (
        "empty run directory",
        lambda c, d, t: (t / "empty").mkdir() or load(t / "empty"),
        CheckpointError,
        r"no checkpoint in",
    ),
    (
        "a file as the run directory",
        lambda c, d, t: (t / "f").write_text("x") and _train(d, workdir=t / "f"),
        CheckpointError,
        r"run directory '.*f' is a file; give --workdir a folder",
    ),
    (
        "a run directory inside a file",
        lambda c, d, t: (t / "f").write_text("x") and _train(d, workdir=t / "f" / "run"),
        CheckpointError,
        r"run directory '.*run' cannot be made: '.*f' is a file",
    ),
    (
        "loading a file as a run",
        lambda c, d, t: (t / "f").write_text("x") and load(t / "f"),
        CheckpointError,
        r"run directory '.*f' is a file",
    ),
]


def _npz_without(tmp_path) -> str:
    path = _npz(tmp_path)
    arrays = dict(np.load(path))
    del arrays["y_test"]
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(name, call, error, message, cvae, small_digits, tmp_path):
    with pytest.raises(error, match=message):
        call(cvae, small_digits, tmp_path)


def test_a_failed_start_writes_nothing(small_digits, tmp_path):
    with pytest.raises(ConfigError):
        _train(small_digits, "train.batch_size=501", workdir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
