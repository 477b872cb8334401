"""Validation data: a seeded share held out of training (or a data set's own split), "validation"
lines in metrics.jsonl, the "best" checkpoint and early stopping chosen on validation, never on test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvae_jax.config import ConfigError, apply_overrides, from_dict, get_config
from cvae_jax.data import images as data
from cvae_jax.tasks.images import train_and_evaluate
from cvae_jax.training import checkpoint
from cvae_jax.training.trainer import _early_stop_due

SMALL = [
    "model.latent_dim=4",
    "model.encoder_hidden=64",
    "model.decoder_hidden=64",
    "train.batch_size=50",
    "train.eval_batch_size=250",
    "checkpoint.every_epochs=1",
    "checkpoint.keep=10",
    "checkpoint.async_save=false",
]


def test_hold_out_is_a_seeded_partition_of_the_training_data(small_digits):
    held = data.hold_out(small_digits, 0.2, seed=3)
    assert (len(held.train), len(held.validation), len(held.test)) == (400, 100, 200)
    rows = np.concatenate([held.train.images, held.validation.images]).reshape(500, -1)
    original = small_digits.train.images.reshape(500, -1)
    assert sorted(map(bytes, rows)) == sorted(map(bytes, original))  # disjoint, and nothing lost
    again, other = data.hold_out(small_digits, 0.2, seed=3), data.hold_out(small_digits, 0.2, seed=4)
    np.testing.assert_array_equal(again.validation.images, held.validation.images)
    assert not np.array_equal(other.validation.images, held.validation.images)
    assert data.hold_out(small_digits, 0.0, seed=3) is small_digits
    assert data.hold_out(held, 0.5, seed=3) is held  # a validation split is kept as it is
    with pytest.raises(data.DataError, match="data.validation"):
        data.hold_out(small_digits, 0.0001, seed=3)


def test_validation_settings_are_checked_and_old_configs_held_nothing_out():
    with pytest.raises(ConfigError, match="data.validation must be"):
        apply_overrides(get_config(), ["data.validation=1.5"])
    with pytest.raises(ConfigError, match="validation_split names a TFDS split"):
        apply_overrides(get_config(), ["data.validation_split=validation"])
    with pytest.raises(ConfigError, match="early_stopping_patience reads validation data"):
        apply_overrides(get_config(), ["data.validation=0", "train.early_stopping_patience=2"])
    saved = get_config().to_dict()
    del saved["data"]["validation"]  # a config.json written before the field existed
    assert from_dict(saved).data.validation == 0.0 and get_config().data.validation == 0.1


def _lines(workdir, split):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["split"] == split]


def _noise_test_split(small_digits):
    """The digits with a test split of uniform noise: the better the model fits digits, the worse
    its noise ELBO, so test and validation disagree on the best epoch."""
    noise = np.random.default_rng(0).uniform(size=small_digits.test.images.shape).astype(np.float32)
    return data.Dataset(
        train=small_digits.train, test=data.Split(noise, small_digits.test.labels), num_classes=10, name="noisy"
    )


def test_the_best_checkpoint_follows_validation_where_test_disagrees(small_digits, tmp_path):
    run = train_and_evaluate(
        apply_overrides(get_config("cvae"), [*SMALL, "train.epochs=4", "data.validation=0.2"]),
        tmp_path / "run",
        dataset=_noise_test_split(small_digits),
        progress=False,
    )
    validation, test = _lines(tmp_path / "run", "validation"), _lines(tmp_path / "run", "test")
    assert [line["epoch"] for line in validation] == [0, 1, 2, 3, 4] == [line["epoch"] for line in test]
    trained = slice(1, None)  # checkpoints exist for epochs 1..4
    best_validation = min(validation[trained], key=lambda line: line["neg_elbo"])
    best_test = min(test[trained], key=lambda line: line["neg_elbo"])
    assert best_validation["epoch"] != best_test["epoch"]  # the case where they disagree
    with checkpoint.Checkpoints(tmp_path / "run", read_only=True) as ckpts:
        assert ckpts.best_step() == best_validation["step"]
    assert len(run.dataset.train) == 400 and len(run.dataset.validation) == 100


def test_early_stopping_ends_after_patience_epochs_without_a_better_validation_elbo(small_digits, tmp_path):
    # Validation on noise (a dataset's own validation split): it gets worse as the model learns digits.
    noisy = _noise_test_split(small_digits)
    dataset = data.Dataset(
        train=small_digits.train, test=small_digits.test, validation=noisy.test, num_classes=10, name="noisy_validation"
    )
    cfg = apply_overrides(get_config("cvae"), [*SMALL, "train.epochs=8", "train.early_stopping_patience=2"])
    train_and_evaluate(cfg, tmp_path / "run", dataset=dataset, progress=False)
    scores = [line["neg_elbo"] for line in _lines(tmp_path / "run", "validation")][1:]
    trained = len(_lines(tmp_path / "run", "train"))
    assert trained < 8  # it stopped early
    best = int(np.argmin(scores))
    assert trained == best + 1 + 2  # two epochs after the best, no more
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    train_and_evaluate(cfg, tmp_path / "run", dataset=dataset, progress=False)  # resuming trains nothing more
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_early_stopping_rule_on_histories():
    def history(*scores):
        return [{"split": "validation", "epoch": i, "neg_elbo": s} for i, s in enumerate((999.0, *scores))]

    assert not _early_stop_due(history(5, 4, 3), 2)
    assert not _early_stop_due(history(5, 4, 4.5), 2)  # one epoch without improvement
    assert _early_stop_due(history(5, 4, 4.5, 4.0), 2)  # two, and a tie is no improvement
    assert not _early_stop_due(history(5, 6, 7), 0)  # off
