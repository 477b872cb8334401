"""Where a measurement came from: the git commit, the command and the host, for every results JSON and
benchmark record. Standard library only, so that any process can stamp what it writes.

Paths are written relative to the working directory, or with the interpreter's prefix (a virtual
environment's site-packages) as `<prefix>` and the temporary folder (a scratch file, say) as `<tmp>`,
so that no record names a folder of the machine it ran on.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
# What measurements write: a change there is an output, not a change to the code that measured.
OUTPUTS = ("experiments/results", "benchmarks/results")


def commit(root: str | Path = _ROOT) -> str:
    """The checkout's HEAD commit, with "+dirty" when tracked files other than the OUTPUTS folders'
    differ from it (a results file rewritten by an earlier run changes no code); "unknown" outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "."]
            + [f":(exclude){folder}" for folder in OUTPUTS],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def portable(text: str) -> str:
    """`text` with this machine's absolute paths made relative: the working directory and the project
    root become relative paths, the interpreter's prefix (where site-packages lie) `<prefix>`, the
    temporary folder `<tmp>`, home `~`. The longest match wins (a project inside /tmp stays `.`)."""
    swaps = [
        (os.getcwd(), "."),
        (str(_ROOT), "."),
        (sys.prefix, "<prefix>"),
        (tempfile.gettempdir(), "<tmp>"),
        (os.path.expanduser("~"), "~"),
    ]
    for absolute, short in sorted(swaps, key=lambda pair: -len(pair[0])):
        if absolute and absolute != "/":
            text = text.replace(absolute + os.sep, short + "/").replace(absolute, short)
    return text


def command(argv: list[str] | None = None) -> str:
    """The command line that is running, as a user would type it from the project root."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None) if argv is None else None
    argv = list(sys.argv if argv is None else argv)
    program = argv[0] if argv else ""
    if spec is not None and spec.name:  # python -m package.module
        head = ["python", "-m", spec.name.removesuffix(".__main__")]
    elif program.endswith(".py"):
        head = ["python", program]
    else:  # python -m package.module, or an entry point such as cvae-jax
        head = [Path(program).name or "python"]
    return portable(" ".join(head + argv[1:]))


def host() -> str:
    """The CPU model (and core count) and the operating system, e.g. "AMD EPYC, 2 cores, Linux"."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def stamp(argv: list[str] | None = None) -> dict[str, str]:
    """{"commit", "command", "host"} of this process."""
    return {"commit": commit(), "command": command(argv), "host": host()}
