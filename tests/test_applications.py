"""Translation, style swap and anomaly scoring: behaviour of trained models, checked against an
independent classifier, a direct computation, or a property that must hold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cvae_jax.apps import anomaly, classifier, inference, translate
from cvae_jax.cli import main
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import series
from cvae_jax.data.images import DataError
from cvae_jax.tasks.images import load_run, train_and_evaluate

pytestmark = pytest.mark.slow  # trained models for the applications

SMALL = [
    "model.encoder_hidden=256",
    "model.decoder_hidden=256",
    "model.latent_dim=2",
    "train.epochs=25",
    "checkpoint.async_save=false",
]


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory, digits):
    """A small CVAE trained on the embedded digits (the config's own data source), saved in a workdir."""
    workdir = tmp_path_factory.mktemp("cvae")
    train_and_evaluate(apply_overrides(get_config("cvae"), SMALL), workdir, dataset=digits, progress=False)
    return workdir, load_run(workdir)


@pytest.fixture(scope="module")
def judge(digits):
    """The independent classifier: a CNN trained on the real training digits only."""
    return classifier.train_classifier(digits.train.images, digits.train.labels, 10, epochs=3)


def test_translations_are_classified_as_their_target_and_keep_the_latent(cvae_run, judge, digits):
    _, run = cvae_run
    images, labels = digits.test.images[:300], digits.test.labels[:300]
    targets = (labels + 1 + np.arange(300) % 9) % 10  # every other class, never the source
    moved = np.asarray(translate.translate(run.model, run.params, images, labels, targets, 10))
    assert moved.shape == images.shape and moved.min() >= 0 and moved.max() <= 1
    accuracy = judge.accuracy(moved, targets)
    assert accuracy > 0.5, f"translations classified as their target class only {accuracy:.2f} of the time (chance 0.1)"
    cycle, random = translate.cycle_distances(run.model, run.params, images, labels, targets, 10)
    assert np.median(cycle) < 0.5 * np.median(random), (np.median(cycle), np.median(random))


def test_style_swap_and_grid_are_the_decoded_latents(cvae_run, digits):
    _, run = cvae_run
    a, la = digits.test.images[:5], digits.test.labels[:5]
    lb = digits.test.labels[100:105]
    swapped = translate.style_swap(run.model, run.params, a, la, lb, 10)
    mean, _ = inference.encode(run.model, run.params, a, inference.one_hot(la, 10))  # by hand
    direct = inference.decode_mean(run.model, run.params, mean, inference.one_hot(lb, 10))
    np.testing.assert_allclose(np.asarray(swapped), np.asarray(direct), atol=1e-6)
    grid = np.asarray(translate.translation_grid(run.model, run.params, a, la, 10))
    assert grid.shape == (5, 10, 28, 28, 1)
    for t in (0, 7):
        np.testing.assert_allclose(
            grid[:, t], np.asarray(translate.translate(run.model, run.params, a, la, t, 10)), atol=1e-5
        )


def test_translate_rejects_bad_labels_and_vaes(cvae_run, digits):
    _, run = cvae_run
    x = digits.test.images[:3]
    with pytest.raises(ValueError, match=r"target labels 10..10 out of range: this model knows classes 0..9"):
        translate.translate(run.model, run.params, x, 0, 10, 10)
    with pytest.raises(ValueError, match=r"one integer or 3 integers"):
        translate.translate(run.model, run.params, x, [0, 1], 2, 10)


def test_cli_translate_matches_the_python_api(cvae_run, digits, tmp_path, capsys):
    workdir, run = cvae_run
    images = (digits.test.images[:4, ..., 0] * 255).round().astype(np.uint8)
    np.save(tmp_path / "in.npy", images)
    np.save(tmp_path / "targets.npy", np.array([3, 1, 4, 1]))
    assert (
        main(
            [
                "translate",
                "--workdir",
                str(workdir),
                "--input",
                str(tmp_path / "in.npy"),
                "--source-label",
                "7",
                "--target-label",
                str(tmp_path / "targets.npy"),
                "--out",
                str(tmp_path / "out.npy"),
            ]
        )
        == 0
    )
    out = np.load(tmp_path / "out.npy")
    expected = translate.translate(run.model, run.params, images[..., None] / 255.0, 7, [3, 1, 4, 1], 10)
    np.testing.assert_allclose(out, np.asarray(expected)[..., 0], atol=1e-5)
    code = main(
        [
            "translate",
            "--workdir",
            str(workdir),
            "--input",
            str(tmp_path / "in.npy"),
            "--source-label",
            "0",
            "--target-label",
            "12",
            "--out",
            str(tmp_path / "bad.npy"),
        ]
    )
    assert code == 2 and "out of range" in capsys.readouterr().err and not (tmp_path / "bad.npy").exists()


# --------------------------------------------------------------------------- anomaly scores


def test_auroc_matches_counting_all_pairs():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, 200).astype(float)  # many ties
    y = rng.random(200) < 0.3
    pairs = s[y][:, None] - s[~y][None, :]
    expected = (np.sum(pairs > 0) + 0.5 * np.sum(pairs == 0)) / pairs.size
    assert anomaly.auroc(s, y) == pytest.approx(expected, abs=1e-12)
    assert anomaly.auroc(np.arange(10.0), np.arange(10) >= 5) == 1.0


def test_calibrated_threshold_keeps_the_false_positive_rate():
    normal = np.random.default_rng(1).normal(size=1000)
    for fpr in (0.01, 0.05, 0.2):
        t = anomaly.calibrate_threshold(normal, fpr)
        assert np.mean(normal > t) <= fpr < np.mean(normal >= t) + 1e-3
    rates = anomaly.detection_rates([0.0, 2.0, 3.0, 0.5], [False, True, False, True], 1.0)
    assert rates == {"precision": 0.5, "recall": 0.5, "false_positive_rate": 0.5, "flagged": 2}
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        anomaly.calibrate_threshold(normal, 1.5)


def test_windows_and_point_scores_against_a_direct_loop():
    x = np.arange(12.0)
    w = series.windows(x, 5, stride=2)
    assert w.shape == (4, 5, 1, 1) and np.array_equal(w[2, :, 0, 0], x[4:9])
    scores = np.array([1.0, 2.0, 4.0, 8.0])
    expected = [np.mean([scores[i] for i in range(4) if 2 * i <= p < 2 * i + 5] or [0.0]) for p in range(12)]
    np.testing.assert_allclose(series.point_scores(scores, 12, 5, 2), expected)
    with pytest.raises(DataError, match="window=20"):
        series.windows(x, 20)
    with pytest.raises(DataError, match="does not exist"):
        series.read_csv("nowhere.csv.gz")


@pytest.mark.parametrize("kind", anomaly.SCORES)
def test_noise_scores_above_digits_for_every_kind(cvae_run, digits, kind):
    _, run = cvae_run
    x, y = digits.test.images[:200], digits.test.labels[:200]
    noise = np.random.default_rng(0).random((200, 28, 28, 1)).astype(np.float32)
    s = anomaly.scores(
        run.model,
        run.params,
        np.concatenate([x, noise]),
        np.concatenate([y, y]),
        kind=kind,
        num_classes=10,
        num_samples=20,
    )
    assert anomaly.auroc(s, np.arange(400) >= 200) > 0.99


def test_scores_do_not_depend_on_the_batching(cvae_run, digits):
    _, run = cvae_run
    x, y = digits.test.images[:23], digits.test.labels[:23]
    whole = anomaly.scores(run.model, run.params, x, y, kind="recon", num_classes=10)
    batched = anomaly.scores(run.model, run.params, x, y, kind="recon", num_classes=10, batch_size=5)  # 4 + short
    assert batched.shape == (23,)
    np.testing.assert_allclose(batched, whole, rtol=1e-5)


def test_importance_sampled_nll_is_below_the_neg_elbo(cvae_run, digits):
    """IWAE with K samples is a tighter bound than the ELBO: -log p(x) estimate <= -ELBO on average."""
    _, run = cvae_run
    x, y = digits.test.images[:200], digits.test.labels[:200]
    nll = anomaly.scores(run.model, run.params, x, y, kind="nll", num_classes=10, num_samples=100)
    neg_elbo = anomaly.scores(run.model, run.params, x, y, kind="neg_elbo", num_classes=10)
    assert nll.mean() < neg_elbo.mean() - 0.5
    again = anomaly.scores(run.model, run.params, x, y, kind="nll", num_classes=10, num_samples=100)
    np.testing.assert_array_equal(nll, again)  # seeded: reproducible
    # ... and the second call reused the first one's compiled scorer (an equal model hits the cache)
    assert anomaly.compiled_scorer(
        run.model.clone(), "nll", num_classes=10, num_samples=100
    ) is anomaly.compiled_scorer(run.model, "nll", num_classes=10, num_samples=100)


def test_cli_score_writes_scores_and_a_calibrated_threshold(cvae_run, digits, tmp_path):
    workdir, run = cvae_run
    np.save(tmp_path / "x.npy", digits.test.images[:50, ..., 0])
    np.save(tmp_path / "y.npy", digits.test.labels[:50])
    out = tmp_path / "scores.npy"
    assert (
        main(
            [
                "score",
                "--workdir",
                str(workdir),
                "--input",
                str(tmp_path / "x.npy"),
                "--labels",
                str(tmp_path / "y.npy"),
                "--kind",
                "neg_elbo",
                "--fpr",
                "0.1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    scores, summary = np.load(out), json.loads(out.with_suffix(".json").read_text())
    expected = anomaly.scores(
        run.model, run.params, digits.test.images[:50], digits.test.labels[:50], kind="neg_elbo", num_classes=10
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    normal = anomaly.scores(
        run.model, run.params, digits.test.images, digits.test.labels, kind="neg_elbo", num_classes=10
    )  # the run's test split: the default calibration set
    assert summary["threshold"] == pytest.approx(anomaly.calibrate_threshold(normal, 0.1))
    assert summary["flagged"] == int(np.sum(scores > summary["threshold"])) and math.isfinite(summary["threshold"])


def test_pictures_show_one_test_example_of_each_class_first():
    from cvae_jax.apps.pictures import shown_examples

    sorted_by_class = np.repeat(np.arange(10), 100)  # the embedded digits' test split: 100 of each class, in order
    shown = shown_examples(sorted_by_class)
    assert sorted_by_class[shown].tolist() == list(range(10)) and shown.tolist() == list(range(0, 1000, 100))
    one_class = np.zeros(30, int)  # nothing to spread over: the first ten
    assert shown_examples(one_class).tolist() == list(range(10))
    three = np.array([2, 2, 0, 0, 1, 2, 0])
    assert shown_examples(three, 5).tolist() == [2, 4, 0, 1, 3]
