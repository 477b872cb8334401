"""Post-hoc latent samplers and the Fréchet judge distance, against closed forms."""

import json

import numpy as np
import pytest

from cvae_jax.apps import frechet, samplers
from cvae_jax.cli import main


def test_frechet_distance_of_gaussians_matches_closed_forms():
    rng = np.random.default_rng(0)
    # diagonal covariances commute: |dm|^2 + sum (sqrt(a) - sqrt(b))^2
    ma, mb, a, b = rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    want = np.sum((ma - mb) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet.frechet_from_moments(ma, np.diag(a), mb, np.diag(b)) == pytest.approx(want, rel=1e-9)
    # any two: Tr (A B)^(1/2) is the sum of the square roots of A B's eigenvalues (real, >= 0)
    x, y = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    ca, cb = x @ x.T + 0.1 * np.eye(3), y @ y.T + 0.1 * np.eye(3)
    root_trace = np.sum(np.sqrt(np.linalg.eigvals(ca @ cb).real))
    want = np.sum((ma[:3] - mb[:3]) ** 2) + np.trace(ca) + np.trace(cb) - 2 * root_trace
    assert frechet.frechet_from_moments(ma[:3], ca, mb[:3], cb) == pytest.approx(want, rel=1e-7)
    feats = rng.normal(size=(500, 5))
    assert frechet.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="same F"):
        frechet.frechet_distance(feats, feats[:, :4])


def test_gmm_fit_recovers_a_known_mixture_and_its_draws_follow_it():
    rng = np.random.default_rng(1)
    means = np.array([[-4.0, 0.0], [4.0, 1.0]])
    codes = np.concatenate([rng.normal(means[0], 0.5, (600, 2)), rng.normal(means[1], 1.0, (1400, 2))])
    fit = samplers.fit_gmm(codes, 2)
    order = np.argsort(fit["means"][:, 0])
    np.testing.assert_allclose(fit["weights"][order], [0.3, 0.7], atol=0.03)
    np.testing.assert_allclose(fit["means"][order], means, atol=0.15)
    z = samplers.sample_gmm(fit, seed=0, num=20000)
    # the mixture's mean and covariance: sum w m, sum w (C + m m^T) - mean mean^T
    w, m, c = fit["weights"], fit["means"], fit["covariances"]
    mean = w @ m
    cov = np.einsum("k,kij->ij", w, c + np.einsum("ki,kj->kij", m, m)) - np.outer(mean, mean)
    np.testing.assert_allclose(z.mean(0), mean, atol=0.1)
    np.testing.assert_allclose(np.cov(z.T), cov, atol=0.3)
    np.testing.assert_array_equal(samplers.sample_gmm(fit, seed=0, num=20000), z)  # seeded: reproducible
    with pytest.raises(ValueError, match="components"):
        samplers.fit_gmm(codes[:3], 5)


@pytest.mark.slow
def test_sample_with_the_gmm_sampler_fits_once_and_saves_beside_the_run(tmp_path):
    workdir = tmp_path / "vae"
    args = ["train", "--model", "vae", "--epochs", "1", "--workdir", str(workdir), "--no-progress"]
    assert main([*args, "--set", "model.latent_dim=4", "--set", "model.encoder_hidden=32"]) == 0
    out_a, out_b = tmp_path / "a.npy", tmp_path / "b.npy"
    sample = ["sample", "--workdir", str(workdir), "--num", "6", "--sampler", "gmm", "--components", "3"]
    assert main([*sample, "--out", str(out_a)]) == 0
    fits = list((workdir / "samplers").glob("gmm_3_step*.npz"))
    assert len(fits) == 1
    before = fits[0].stat().st_mtime_ns
    assert main([*sample, "--out", str(out_b)]) == 0  # read back, not refitted: the same draws
    assert fits[0].stat().st_mtime_ns == before
    a, b = np.load(out_a), np.load(out_b)
    np.testing.assert_array_equal(a, b)
    assert a.shape[0] == 6 and np.all((a >= 0) & (a <= 1))
    prior = tmp_path / "prior.npy"
    assert main(["sample", "--workdir", str(workdir), "--num", "6", "--out", str(prior)]) == 0
    assert not np.array_equal(np.load(prior), a)
    assert json.loads((workdir / "config.json").read_text())["model"]["latent_dim"] == 4
