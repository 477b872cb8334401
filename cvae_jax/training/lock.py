"""One training process per run directory: an advisory lock on `<workdir>/.lock`.

The lock is the operating system's (`fcntl.flock`), so it is released when its process ends in any
way, `kill -9` included: a lock left behind by a killed run never blocks the next one. The file
says who holds it (pid, host, command), for the message a second process gets.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from cvae_jax.training.checkpoint import CheckpointError

try:
    import fcntl
except ImportError:  # not POSIX: no lock (one process per run directory is then the user's to keep)
    fcntl = None


class WorkdirInUse(CheckpointError):
    """Another live process is training in this run directory."""


class WorkdirLock:
    """Holds `<workdir>/.lock` while training; raises WorkdirInUse at once when another process does.
    Use as a context manager."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / ".lock"
        self._file = None

    def __enter__(self) -> WorkdirLock:
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise WorkdirInUse(
                f"run directory {str(self.path.parent)!r} is in use by {holder}; wait for it to finish (or stop "
                "it), or give this run another --workdir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)}))
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"process {holder['pid']} on {holder['host']} ({holder['command'][:120]})"
    except (ValueError, KeyError, TypeError):
        return "another process"
