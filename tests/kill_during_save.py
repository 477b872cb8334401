"""Runs `cvae-jax train ARGS...` and SIGKILLs its own process right after the N-th checkpoint save
has started (Orbax writes asynchronously, so the write is then in flight):

    python tests/kill_during_save.py N train --workdir ... [more cvae-jax arguments]
"""

import os
import signal
import sys

import orbax.checkpoint as ocp

from cvae_jax.cli import main

target, calls = int(sys.argv[1]), 0
original = ocp.CheckpointManager.save


def save_then_die(self, *args, **kwargs):
    global calls
    result = original(self, *args, **kwargs)
    calls += 1
    if calls == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return result


ocp.CheckpointManager.save = save_then_die
sys.exit(main(sys.argv[2:]))
