"""The tasks, in one home: each is a `cvae_jax.training.tasks.Task` that the one trainer fits.

* `images`: images (and series windows) with labels or conditions: the VAE/CVAE, ResNet and
  hierarchical VAEs (`ImageTask`, `train_and_evaluate`, `load`);
* `molecules`: SMILES/SELFIES CVAEs conditioned on RDKit properties (`MoleculeTask`, `train`);
* `code_prior`: a VQ-VAE's second stage, an autoregressive prior over its codes (`CodePriorTask`).

Your own task is a subclass in your own file (docs/tasks.md); `cvae-jax train --task FILE.py:Class`
(or `package.module:Class`) trains it, configured by `--set` like the library's own.
"""

from __future__ import annotations

# The tasks `cvae-jax train --task NAME` knows by name.
TASKS = {
    "images": "cvae_jax.tasks.images:ImageTask",
    "molecules": "cvae_jax.tasks.molecules:MoleculeTask",
    "code_prior": "cvae_jax.tasks.code_prior:CodePriorTask",
}


def resolve(name: str):
    """The Task class of `name`: a name in TASKS, `package.module:Class` or `path/to/file.py:Class`."""
    from cvae_jax import plugins
    from cvae_jax.config import ConfigError
    from cvae_jax.training.tasks import Task

    spec = TASKS.get(name, name)
    if ":" not in spec:
        raise ConfigError(
            f"--task {name!r} is not a task: give one of {sorted(TASKS)}, package.module:Class or FILE.py:Class"
        )
    where, class_name = spec.rsplit(":", 1)
    found = getattr(plugins.load_one(where, "--task"), class_name, None)
    if not (isinstance(found, type) and issubclass(found, Task)):
        raise ConfigError(f"--task {name!r}: {where} has no Task subclass named {class_name!r}")
    return found
