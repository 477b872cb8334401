"""Shared fixtures. Every test and the subprocesses they start (which inherit os.environ) share one
persistent XLA compilation cache for the session: many tests start fresh processes that compile
the same programs (a CLI run compiled 76 programs in 13 of its 23 s; with the cache warm it took
10 s). A cached executable is the same compiled program, so results are unchanged; the benchmarks
switch the cache off, since they time compilation."""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # set before jax is imported; pytest-xdist workers inherit it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cvae_jax_test_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

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
