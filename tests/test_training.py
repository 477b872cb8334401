"""Training on the real embedded digits works: the test ELBO falls far below its start, and CVAE
samples are recognised as their requested class by an independent classifier trained on real digits."""

import jax
import pytest

from cvae_jax import classifier, evaluate
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.run import train_and_evaluate


@pytest.fixture(scope="module")
def trained_cvae(digits):
    cfg = apply_overrides(get_config("cvae"), ["model.latent_dim=8", "train.epochs=60"])
    return train_and_evaluate(cfg, None, dataset=digits, progress=False)


def test_test_elbo_falls_far_below_its_start(trained_cvae):
    tests = [e for e in trained_cvae.history if e["split"] == "test"]
    start, end = tests[0]["neg_elbo"], tests[-1]["neg_elbo"]
    # An untrained decoder gives ~784 * log 2 = 543 nats; a trained one well under 150.
    assert start > 500
    assert end < 0.3 * start and end < 150


def test_cvae_samples_are_their_requested_class(trained_cvae, digits):
    clf = classifier.train_classifier(digits.train.images, digits.train.labels, digits.num_classes)
    assert clf.accuracy(digits.test.images, digits.test.labels) > 0.9  # the judge itself is competent
    accuracy, per_class = evaluate.conditional_accuracy(clf, trained_cvae.model, trained_cvae.state.params,
                                                        jax.random.key(123), 10, per_class=100)
    assert accuracy > 0.75, per_class  # chance is 0.1
    assert per_class.min() > 0.4, per_class
