"""cvae_jax keeps freed host memory for reuse (cvae_jax/host.py): a freed large block is reused
without page faults, and CVAE_JAX_KEEP_FREED_MEMORY=0 restores glibc's default (unmap on free)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import numpy as np
import cvae_jax
from cvae_jax import host
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(50_000_000 // 8); del a          # 50 MB, touched, freed
before = faults()
b = np.ones(50_000_000 // 8)                 # the same size again
print(host.keep_freed_memory(), faults() - before)
"""


def _probe(opt_out: bool) -> tuple[str, int]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "NUMPY_MADVISE_HUGEPAGE": "0"}  # count 4 KiB pages
    if opt_out:
        env["CVAE_JAX_KEEP_FREED_MEMORY"] = "0"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_blocks_are_reused_without_page_faults():
    applied, faults = _probe(opt_out=False)
    assert applied == "True"
    default_applied, default_faults = _probe(opt_out=True)
    assert default_applied == "False"
    pages = 50_000_000 // 4096
    assert default_faults > 0.5 * pages, default_faults  # glibc default: unmapped on free, faulted in again
    assert faults < 0.05 * pages, faults  # kept: reused as is
