"""The tasks, in one home: each is a `cvae_jax.training.tasks.Task` that the one trainer fits.

* `images`: images (and series windows) with labels or conditions: the VAE/CVAE, ResNet and
  hierarchical VAEs (`ImageTask`, `train_and_evaluate`, `load`);
* `molecules`: SMILES/SELFIES CVAEs conditioned on RDKit properties (`MoleculeTask`, `train`).

Your own task is a subclass in your own file (docs/tasks.md).
"""
