"""IWAE, KL schedules, free bits and the Sohn hybrid objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.config import TrainConfig, apply_overrides, get_config
from cvae_jax.core import objectives
from cvae_jax.tasks.images import train_and_evaluate


@pytest.fixture(scope="module")
def trained(small_digits):
    cfg = apply_overrides(
        get_config("vae"),
        [
            "model.latent_dim=4",
            "model.encoder_hidden=64",
            "model.decoder_hidden=64",
            "train.epochs=3",
            "train.batch_size=32",
        ],
    )
    run = train_and_evaluate(cfg, None, dataset=small_digits, progress=False)
    batch = {"image": jnp.asarray(small_digits.test.images[:64]), "label": jnp.asarray(small_digits.test.labels[:64])}
    return run, batch


def test_iwae_with_one_sample_equals_the_elbo(trained):
    run, batch = trained
    key = jax.random.key(3)
    iwae = objectives.make_iwae_terms(run.model, num_classes=10, num_samples=1)(run.state.params, batch, key)
    elbo = objectives.make_elbo_terms(run.model, num_classes=10, analytic_kl=False)(run.state.params, batch, key)
    np.testing.assert_allclose(iwae["neg_iwae"], elbo["neg_elbo"], rtol=1e-5)


def test_iwae_bound_tightens_with_k(trained):
    run, batch = trained
    bounds = []
    for k in (1, 5, 50):
        fn = jax.jit(objectives.make_iwae_terms(run.model, num_classes=10, num_samples=k))
        values = [float(jnp.mean(fn(run.state.params, batch, jax.random.key(s))["neg_iwae"])) for s in range(5)]
        bounds.append(np.mean(values))
    assert bounds[0] > bounds[1] > bounds[2]


def test_kl_schedules():
    linear = TrainConfig(kl_schedule="linear", warmup_steps=100, beta=2.0)
    assert [float(objectives.kl_weight(linear, s, 1000)) for s in (0, 50, 100, 500)] == [0.0, 1.0, 2.0, 2.0]
    cyc = TrainConfig(kl_schedule="cyclical", num_cycles=4)
    values = [float(objectives.kl_weight(cyc, s, 400)) for s in (0, 25, 50, 99, 100, 125)]
    assert values == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5]
    assert float(objectives.kl_weight(TrainConfig(beta=0.3), 123, 1000)) == pytest.approx(0.3)
    fixed = TrainConfig(kl_schedule="cyclical", num_cycles=4, cycle_steps=100)  # the same cycles, any length
    assert [float(objectives.kl_weight(fixed, s, 4000)) for s in (0, 25, 50, 99, 100, 125)] == values
    assert objectives.kl_period(fixed, 4000) == objectives.kl_period(cyc, 400) == 100.0
    assert objectives.kl_period(linear, 1000) is None


def test_free_bits_floor_per_dimension(trained):
    run, batch = trained
    terms = objectives.make_elbo_terms(run.model, num_classes=10)(run.state.params, batch, jax.random.key(0))
    per_dim = np.asarray(terms["kl_per_dim"]).mean(0)
    floor = float(np.median(per_dim))
    loss = objectives.make_elbo_loss(lambda *a: terms, cfg=TrainConfig(free_bits=floor))
    value, _ = loss(None, None, None)
    expected = float(np.mean(terms["recon"])) + np.maximum(per_dim, floor).sum()
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert np.maximum(per_dim, floor).sum() > per_dim.sum()


@pytest.mark.slow
def test_hybrid_objective_trains_a_conditional_prior_cvae(small_digits):
    cfg = apply_overrides(
        get_config("cvae"),
        [
            "model.prior=conditional",
            "train.objective=hybrid",
            "train.hybrid_alpha=0.5",
            "model.latent_dim=4",
            "model.encoder_hidden=64",
            "model.decoder_hidden=64",
            "train.epochs=3",
            "train.batch_size=32",
        ],
    )
    run = train_and_evaluate(cfg, None, dataset=small_digits, progress=False)
    train = [e for e in run.history if e["split"] == "train"]
    assert "gsnn_recon" in train[-1] and train[-1]["gsnn_recon"] < train[0]["gsnn_recon"]
    tests = [e["neg_elbo"] for e in run.history if e["split"] == "test"]
    assert tests[-1] < 0.7 * tests[0]


def test_iwae_training_runs_and_reports_the_elbo(small_digits):
    cfg = apply_overrides(
        get_config("vae"),
        [
            "train.objective=iwae",
            "train.iwae_samples=3",
            "model.latent_dim=4",
            "model.encoder_hidden=64",
            "model.decoder_hidden=64",
            "train.epochs=2",
        ],
    )
    run = train_and_evaluate(cfg, None, dataset=small_digits, progress=False)
    train = [e for e in run.history if e["split"] == "train"]
    assert train[-1]["neg_iwae"] <= train[-1]["neg_elbo"] + 1e-3
