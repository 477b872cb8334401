"""Every built-in prior is a normalized density, its samples follow it, its KL is right, and it trains."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.config import apply_overrides, get_config
from cvae_jax.core import distributions, priors
from cvae_jax.core.models import build_model
from cvae_jax.tasks.images import train_and_evaluate
from cvae_jax.training.step import INIT, purpose_key

PRIORS = [
    ("vae", "standard_normal"),
    ("vae", "learned_gaussian"),
    ("vae", "mixture"),
    ("vae", "vamp"),
    ("cvae", "conditional"),
    ("vae", "flow"),
]


def small_model(kind, prior, latent_dim=2):
    cfg = apply_overrides(
        get_config(kind),
        [
            f"model.prior={prior}",
            f"model.latent_dim={latent_dim}",
            "model.encoder_hidden=16",
            "model.decoder_hidden=16",
            "model.prior_components=3",
            "model.flow_layers=3",
        ],
    )
    model = build_model(cfg.model, (6, 6, 1), num_classes=3)
    c = jnp.eye(3)[:1] if kind == "cvae" else None

    @jax.jit  # one program (op by op, every shape's draw compiled on its own)
    def init(c):
        params = model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)), c)
        # Perturb every parameter so that no prior sits at a trivial (e.g. identity-flow) initialization.
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(1), len(leaves))
        return jax.tree.unflatten(tree, [p + 0.1 * distributions.normal(k, p.shape) for p, k in zip(leaves, keys)])

    return model, init(c), c


def grid(extent=9.0, n=361):
    axis = np.linspace(-extent, extent, n)
    zx, zy = np.meshgrid(axis, axis)
    return np.stack([zx.ravel(), zy.ravel()], -1).astype(np.float32), (axis[1] - axis[0]) ** 2


@pytest.mark.slow
@pytest.mark.parametrize("kind, name", PRIORS)
def test_prior_normalizes_and_samples_match_density(kind, name):
    model, params, c = small_model(kind, name)
    z, cell = grid()
    cz = None if c is None else jnp.broadcast_to(c, (len(z), 3))
    log_prob = jax.jit(lambda p, z, c: model.apply(p, z, c, method=model.prior_log_prob))
    density = np.exp(np.asarray(log_prob(params, jnp.asarray(z), cz), np.float64))
    assert density.sum() * cell == pytest.approx(1.0, abs=2e-3)
    # Sample moments match the moments of the density on the grid.
    n = 100_000
    cs = None if c is None else jnp.broadcast_to(c, (n, 3))
    sample = jax.jit(lambda p, key, c: model.apply(p, key, n, c, method=model.prior_sample))
    samples = np.asarray(sample(params, jax.random.key(5), cs), np.float64)
    weights = density * cell
    for f in (lambda v: v, lambda v: v**2):
        expected = (f(z) * weights[:, None]).sum(0)
        np.testing.assert_allclose(f(samples).mean(0), expected, atol=0.03 + 0.02 * np.abs(expected).max())


@pytest.mark.parametrize(
    "kind, name", [("vae", "standard_normal"), ("vae", "learned_gaussian"), ("cvae", "conditional")]
)
def test_analytic_kl_matches_monte_carlo(kind, name):
    model, params, c = small_model(kind, name, latent_dim=3)
    assert priors.has_analytic_kl(model.prior)
    mean = jnp.array([[0.4, -1.0, 0.2]])
    log_var = jnp.array([[-0.5, 0.3, -1.2]])
    n = 200_000
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(jax.random.key(2), (n, 3))
    analytic = model.apply(params, mean, log_var, z[:1], c, method=model.kl_to_prior)
    cz = None if c is None else jnp.broadcast_to(c, (n, 3))
    log_q = -0.5 * (((z - mean) ** 2) / jnp.exp(log_var) + log_var + jnp.log(2 * jnp.pi)).sum(-1)
    mc = jnp.mean(log_q - model.apply(params, z, cz, method=model.prior_log_prob))
    np.testing.assert_allclose(analytic[0], mc, rtol=0.02, atol=0.01)


@pytest.mark.slow
def test_priors_without_closed_form_use_monte_carlo():
    for name in ("mixture", "vamp", "flow"):
        model, _, _ = small_model("vae", name)
        assert not priors.has_analytic_kl(model.prior), name


@pytest.mark.slow
@pytest.mark.parametrize("kind, name", [p for p in PRIORS if p[1] != "standard_normal"])
def test_each_prior_trains_end_to_end(kind, name, small_digits):
    cfg = apply_overrides(
        get_config(kind),
        [
            f"model.prior={name}",
            "model.latent_dim=4",
            "model.encoder_hidden=64",
            "model.decoder_hidden=64",
            "train.epochs=3",
            "train.batch_size=32",
            "model.prior_components=5",
        ],
    )
    run = train_and_evaluate(cfg, None, dataset=small_digits, progress=False)
    tests = [e["neg_elbo"] for e in run.history if e["split"] == "test"]
    assert tests[-1] < 0.7 * tests[0]
    model = build_model(cfg.model, (28, 28, 1))
    c = jnp.zeros((1, 10)) if kind == "cvae" else None
    init_prior = model.init(purpose_key(cfg.seed, INIT), jnp.zeros((1, 28, 28, 1)), c)["params"]["prior"]
    trained_prior = run.state.params["params"]["prior"]
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(trained_prior), jax.tree.leaves(init_prior))]
    assert any(changed), "the prior's parameters were not trained"


def test_unknown_prior_is_a_clear_error():
    cfg = apply_overrides(get_config("vae"), ["model.prior=student_t"])
    with pytest.raises(ValueError, match=r"unknown prior 'student_t' \(model.prior\); registered: "):
        build_model(cfg.model, (28, 28, 1))
