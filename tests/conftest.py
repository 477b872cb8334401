"""Shared fixtures. Every test and the subprocesses they start (which inherit os.environ) share one
persistent XLA compilation cache for the session: many tests start fresh processes that compile
the same programs (a CLI run compiled 76 programs in 13 of its 23 s; with the cache warm it took
10 s). A cached executable is the same compiled program, so results are unchanged; the benchmarks
switch the cache off, since they time compilation."""

import atexit
import os
import shutil
import tempfile

# LLVM's optimization level for what the tests compile (XLA's own HLO passes, fusion included, are
# unchanged): -O0 compiles much faster (the priors tests: 91 -> 60 s), and the tests check what a
# program computes, not how fast its machine code runs; both sides of every comparison are
# compiled alike. CVAE_JAX_TEST_FULL_OPT=1 runs the suite at XLA's default level instead.
TEST_XLA_FLAGS = "" if os.environ.get("CVAE_JAX_TEST_FULL_OPT") == "1" else "--xla_backend_optimization_level=0"
if TEST_XLA_FLAGS and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # set before jax is imported; pytest-xdist workers inherit it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cvae_jax_test_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

if "CVAE_JAX_CACHE" not in os.environ:  # derived data (prepared IDX files, MOSES references) stay in the session
    os.environ["CVAE_JAX_CACHE"] = tempfile.mkdtemp(prefix="cvae_jax_test_cache_")
    atexit.register(shutil.rmtree, os.environ["CVAE_JAX_CACHE"], ignore_errors=True)

import numpy as np  # noqa: E402 (after the environment above is set)
import pytest  # noqa: E402

from cvae_jax.data import images as data  # noqa: E402


@pytest.fixture(scope="session")
def full_opt_env() -> dict[str, str]:
    """os.environ for a subprocess that runs its programs long enough for -O0 machine code to cost
    more than it saves in compiling (a benchmark, a 60-epoch training): XLA_FLAGS without the -O0."""
    return {
        **os.environ,
        "XLA_FLAGS": " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f != TEST_XLA_FLAGS),
    }


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
    return data.Dataset(
        train=data.Split(digits.train.images[tr], digits.train.labels[tr]),
        test=data.Split(digits.test.images[te], digits.test.labels[te]),
        num_classes=10,
        name="small_digits",
    )
