import numpy as np
import pytest

from cvae_jax import data


@pytest.fixture(scope="session")
def digits() -> data.Dataset:
    """The embedded 5,000 real MNIST digits."""
    return data.load_npz(data.embedded_path())


@pytest.fixture(scope="session")
def small_digits(digits) -> data.Dataset:
    """500 train / 200 test real digits, for fast runs."""
    rng = np.random.default_rng(0)
    tr = rng.permutation(len(digits.train))[:500]
    te = rng.permutation(len(digits.test))[:200]
    return data.Dataset(train=data.Split(digits.train.images[tr], digits.train.labels[tr]),
                        test=data.Split(digits.test.images[te], digits.test.labels[te]),
                        num_classes=10, name="small_digits")
