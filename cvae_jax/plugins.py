"""User extensions loaded by name: `--plugin FILE.py` or `--plugin package.module` on any cvae-jax
command imports that file or module first, so that the priors, objectives and posteriors it registers
can be picked by name (`--set train.objective=NAME`)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path


def load(specs: list[str] | None) -> None:
    """Imports each plugin: a path to a .py file, or an importable module name."""
    for spec in specs or []:
        load_one(spec)


def load_one(spec: str, flag: str = "--plugin"):
    """The module of `spec`, a path to a .py file or an importable module name, imported once."""
    if not spec.endswith(".py"):
        try:
            return importlib.import_module(spec)
        except ModuleNotFoundError as e:
            raise ImportError(f"{flag} {spec}: {e}; give a .py file or an importable module") from None
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {spec}: no such file; give a .py file or an importable module")
    name = f"cvae_jax_plugin_{path.stem}"
    if name not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    return sys.modules[name]
