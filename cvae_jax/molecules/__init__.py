"""Conditional molecule generation: a SMILES CVAE conditioned on RDKit properties, trained by the
library's one trainer as a `MoleculeTask`.

    cfg = molecules.recipe("train.csv.gz", "test.csv.gz")
    data = molecules.prepare(cfg)
    model, state, history = molecules.train(cfg, data, workdir="runs/molecules")
    smi = molecules.generate(model, state.params, key, data.condition_for({"logp": 3.0}, 100), data.vocab)
"""

from cvae_jax.tasks.molecules import (  # noqa: F401
    MoleculeConfig,
    MoleculeData,
    MoleculeTask,
    build_model,
    generate,
    load,
    prepare,
    property_control,
    recipe,
    reconstruction,
    train,
)
