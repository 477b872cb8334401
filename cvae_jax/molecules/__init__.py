"""Conditional molecule generation: a SMILES CVAE conditioned on RDKit properties, trained by the
library's one trainer as a `MoleculeTask`.

    cfg = molecules.make_config("default", ["data.num_train=30000", "model.decoder_layers=2"])
    data = molecules.prepare(cfg)
    model, state, history = molecules.train(cfg, data, workdir="runs/molecules")
    smi = molecules.generate(model, state.params, key, data.condition_for({"logp": 3.0}, 100), data.vocab)

The modules here hold one job each: `config`, `dataset`, `model` (the network), `generation`,
`grammar`, `chem` (RDKit), `metrics` and `benchmark` (MOSES scoring); the task is
`cvae_jax.tasks.molecules`, whose public names are also reachable from here.
"""

import importlib

_PUBLIC = (
    "MoleculeConfig",
    "MoleculeData",
    "MoleculeTask",
    "build_model",
    "generate",
    "load",
    "make_config",
    "prepare",
    "property_control",
    "recipe",
    "reconstruction",
    "train",
)


def __getattr__(name: str):
    # The task module imports this package's modules, so its names are looked up when first asked for.
    if name in _PUBLIC:
        return getattr(importlib.import_module("cvae_jax.tasks.molecules"), name)
    raise AttributeError(f"module 'cvae_jax.molecules' has no attribute {name!r}")


__all__ = list(_PUBLIC)
