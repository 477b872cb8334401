"""cvae_jax: Variational Autoencoders and Conditional VAEs in JAX/Flax, at accelerator speed.

The package is layered: `core` (distributions, likelihoods, priors, posteriors, models, objectives),
`nn` (layers), `training` (step, program, trainer, checkpoints), `tasks` (images, molecules), `data`,
`apps` (sampling, evaluation, translation, anomaly scores), `molecules` and `cli`. The public API is
importable from here; modules such as `cvae_jax.priors` or `cvae_jax.inference` resolve to their place in the layers.
Importing cvae_jax changes no process-wide setting (the CLI's entry point makes its own).
"""

import importlib

from cvae_jax.config import Config, ConfigError, apply_overrides, get_config
from cvae_jax.core.models import CVAE, VAE, Decoder, Encoder, build_model
from cvae_jax.tasks.images import load, train_and_evaluate

__version__ = "0.2.0"

# Short names of the modules the README and docs use, e.g. `from cvae_jax import priors, inference`.
_MODULES = {
    "distributions": "cvae_jax.core.distributions",
    "likelihoods": "cvae_jax.core.likelihoods",
    "priors": "cvae_jax.core.priors",
    "models": "cvae_jax.core.models",
    "objectives": "cvae_jax.core.objectives",
    "layers": "cvae_jax.nn.layers",
    "tasks": "cvae_jax.training.tasks",
    "trainer": "cvae_jax.training.trainer",
    "images": "cvae_jax.tasks.images",
    "checkpoint": "cvae_jax.training.checkpoint",
    "parallel": "cvae_jax.training.parallel",
    "inference": "cvae_jax.apps.inference",
    "evaluate": "cvae_jax.apps.evaluate",
    "translate": "cvae_jax.apps.translate",
    "anomaly": "cvae_jax.apps.anomaly",
    "classifier": "cvae_jax.apps.classifier",
    "data": "cvae_jax.data",
    "molecules": "cvae_jax.molecules",
    "series": "cvae_jax.data.series",
    "smiles": "cvae_jax.data.smiles",
}


def __getattr__(name: str):
    if name in _MODULES:
        module = importlib.import_module(_MODULES[name])
        globals()[name] = module
        return module
    if name == "from_pretrained":
        from cvae_jax.apps.pretrained import from_pretrained

        return from_pretrained
    if name == "keep_freed_memory":
        from cvae_jax.cli.host import keep_freed_memory

        return keep_freed_memory
    raise AttributeError(f"module 'cvae_jax' has no attribute {name!r}")


__all__ = [
    "CVAE",
    "VAE",
    "Config",
    "ConfigError",
    "Decoder",
    "Encoder",
    "apply_overrides",
    "build_model",
    "from_pretrained",
    "get_config",
    "load",
    "train_and_evaluate",
    *_MODULES,
]
