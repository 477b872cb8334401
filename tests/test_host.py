"""The CLI keeps freed host memory for reuse (cvae_jax/cli/host.py): a freed large block is reused
without page faults, CVAE_JAX_KEEP_FREED_MEMORY=0 restores glibc's default (unmap on free), and
importing cvae_jax alone changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import numpy as np
import cvae_jax
from cvae_jax.cli import host
def refault():
    a = np.ones(50_000_000 // 8); del a          # 50 MB, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = np.ones(50_000_000 // 8)                 # the same size again
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
on_import = refault()
from cvae_jax.cli import main
code = main(["evaluate", "--workdir", "none", "--chunk", "0"])  # the entry point: fails fast, after the setting
print(code, host.keep_freed_memory(), on_import, refault())
"""


def _probe(opt_out: bool) -> tuple[str, int]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "NUMPY_MADVISE_HUGEPAGE": "0"}  # count 4 KiB pages
    if opt_out:
        env["CVAE_JAX_KEEP_FREED_MEMORY"] = "0"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    code, applied, on_import, faults = out.stdout.split()
    assert code == "2"
    return applied, int(on_import), int(faults)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_blocks_are_reused_without_page_faults():
    applied, on_import, faults = _probe(opt_out=False)
    assert applied == "True"
    default_applied, _, default_faults = _probe(opt_out=True)
    assert default_applied == "False"
    pages = 50_000_000 // 4096
    assert on_import > 0.5 * pages, on_import  # importing cvae_jax left glibc's default alone
    assert default_faults > 0.5 * pages, default_faults  # glibc default: unmapped on free, faulted in again
    assert faults < 0.05 * pages, faults  # kept: reused as is
