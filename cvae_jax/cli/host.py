"""Host memory allocator settings that keep XLA:CPU fast.

XLA:CPU allocates each compiled call's temporaries (activations, gradients) anew on every call.
glibc serves large blocks with mmap and unmaps them on free, so every train step page-faults and
zeroes its temporaries again (docs/performance.md has the measured cost). `keep_freed_memory` asks glibc to serve every
block from its heap and never give freed memory back to the OS, so the next step reuses warm pages.
The cost: the process keeps its peak memory until it exits.

The `cvae-jax` entry point applies it on Linux with glibc (importing cvae_jax changes nothing);
set CVAE_JAX_KEEP_FREED_MEMORY=0 to opt out. A library user may call it first thing in a script.

What it cannot reach: XLA's worker threads allocate from glibc's per-thread arenas, whose heaps
hold at most 64 MB, and glibc always mmaps (and on free unmaps) a bigger block there. One call
whose temporaries exceed that (article CVAE stepped at batch 1024) still faults them in each time;
MALLOC_ARENA_MAX=1 in the environment avoids it at a cost to small batches (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt(3) parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Makes glibc malloc keep freed memory for reuse (no mmap per block, no trimming). Returns
    whether the setting is in effect; a no-op elsewhere (macOS, musl) or when opted out."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("CVAE_JAX_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
