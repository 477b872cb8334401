"""Post-hoc latent samplers: draw z from a density fitted to a trained model's aggregate posterior
instead of from its prior (ex-post density estimation, Ghosh et al. 2020, "From Variational to
Deterministic Autoencoders"; pythae's GaussianMixtureSampler). The decoder is unchanged; only where z
comes from differs, which closes part of the gap between the prior and the codes the decoder was
trained on.

    fit = samplers.gmm_for_run(workdir, run, dataset, components=10)   # fitted once, saved beside the run
    z = samplers.sample_gmm(fit, seed=0, num=64)

`cvae-jax sample --sampler gmm` does both. The fit (scikit-learn's GaussianMixture, full covariances,
on the posterior means of the training examples) is saved as `samplers/gmm_<K>_step<S>.npz` in the run
directory, for the checkpoint step it was fitted on.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np

SAMPLERS = ("prior", "gmm")


def training_codes(model, params, images: np.ndarray, condition=None, batch: int = 1000) -> np.ndarray:
    """float64 [N, D]: the posterior means E_q[z | x] of images (for a CVAE, with their conditions)."""
    encode = jax.jit(lambda p, x, c: model.apply(p, x, c, method=model.encode)[0])
    codes = [
        np.asarray(encode(params, images[i : i + batch], None if condition is None else condition[i : i + batch]))
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(codes).astype(np.float64)


def fit_gmm(codes: np.ndarray, components: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A Gaussian mixture with full covariances fitted by EM (scikit-learn) to codes [N, D]:
    {"weights" [K], "means" [K, D], "covariances" [K, D, D]}."""
    from sklearn.mixture import GaussianMixture

    if components < 1 or components > len(codes):
        raise ValueError(f"components must be in 1..{len(codes)} (the codes fitted on), got {components}")
    gmm = GaussianMixture(components, covariance_type="full", random_state=seed, max_iter=500).fit(codes)
    return {"weights": gmm.weights_, "means": gmm.means_, "covariances": gmm.covariances_}


def sample_gmm(fit: dict[str, np.ndarray], seed: int, num: int) -> np.ndarray:
    """float32 [num, D] draws from a fitted mixture: a component by its weight, then its Gaussian."""
    rng = np.random.default_rng(seed)
    weights = np.asarray(fit["weights"], np.float64)
    picks = rng.choice(len(weights), size=num, p=weights / weights.sum())
    chol = np.linalg.cholesky(np.asarray(fit["covariances"], np.float64))
    eps = rng.standard_normal((num, chol.shape[-1]))
    z = np.asarray(fit["means"])[picks] + np.einsum("nij,nj->ni", chol[picks], eps)
    return z.astype(np.float32)


def gmm_path(workdir: str | Path, components: int, step: int) -> Path:
    return Path(workdir) / "samplers" / f"gmm_{components}_step{step}.npz"


def gmm_for_run(workdir, run, images: np.ndarray, condition=None, *, components: int = 10):
    """The mixture fitted to the codes of `images` (the run's training images) under the run's
    checkpoint (`run`: `cvae_jax.tasks.images.Loaded`), read from the run directory when it was fitted
    before, else fitted (EM seeded with 0) and saved there (written to a temporary file, then renamed)."""
    path = gmm_path(workdir, components, run.step)
    if path.exists():
        with np.load(path) as saved:
            return {k: saved[k] for k in ("weights", "means", "covariances")}
    fit = fit_gmm(training_codes(run.model, run.params, images, condition), components)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **fit)
    tmp.replace(path)
    return fit
