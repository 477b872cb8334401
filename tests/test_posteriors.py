"""The library's richer posteriors against their definitions: the full-covariance Gaussian's density is
the multivariate normal's (scipy), and IAF's log-density is the base density less the log-determinant
of the flow's Jacobian (computed by autodiff); both train, evaluate (IS-NLL) and resume."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from cvae_jax.apps import evaluate
from cvae_jax.config import ConfigError, apply_overrides, get_config
from cvae_jax.core import distributions, posteriors
from cvae_jax.core.models import build_model
from cvae_jax.tasks.images import train_and_evaluate


def _inputs(b=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    mean = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
    log_var = jnp.asarray(rng.normal(scale=0.3, size=(b, d)), jnp.float32)
    return mean, log_var, rng


@jax.jit(static_argnums=0)
def _far_from_identity(flow, z, context):
    """The flow's initial weights, each perturbed so that the flow is far from the identity."""
    params = flow.init(jax.random.key(0), z, context)
    return jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(7), p.shape), params)


def test_full_covariance_density_is_the_multivariate_normal_s():
    mean, log_var, rng = _inputs()
    q = posteriors.FullCovariance(4)
    context = jnp.asarray(rng.normal(scale=0.5, size=(3, q.context_dim)), jnp.float32)
    z, log_q = q.apply({}, jax.random.key(0), mean, log_var, 5, context, method=q.sample)
    chol = np.asarray(q.apply({}, log_var, context, method=q.cholesky), np.float64)
    for b in range(3):
        cov = chol[b] @ chol[b].T
        assert np.allclose(np.triu(chol[b], 1), 0) and np.allclose(np.diag(chol[b]), np.exp(0.5 * log_var[b]))
        want = stats.multivariate_normal(np.asarray(mean[b], np.float64), cov).logpdf(np.asarray(z[:, b], np.float64))
        np.testing.assert_allclose(log_q[:, b], want, rtol=1e-4, atol=1e-4)
    # its samples have that covariance
    many, _ = q.apply({}, jax.random.key(1), mean[:1], log_var[:1], 20000, context[:1], method=q.sample)
    cov0 = chol[0] @ chol[0].T
    np.testing.assert_allclose(np.cov(np.asarray(many[:, 0]).T), cov0, atol=0.05 * np.abs(cov0).max())


def test_full_covariance_kl_to_the_standard_normal_is_the_closed_form_and_the_elbo_uses_it():
    mean, log_var, rng = _inputs()
    q = posteriors.FullCovariance(4)
    context = jnp.asarray(rng.normal(scale=0.5, size=(3, q.context_dim)), jnp.float32)
    kl = np.asarray(q.apply({}, mean, log_var, context, method=q.kl_to_standard_normal))
    chol = np.asarray(q.apply({}, log_var, context, method=q.cholesky), np.float64)
    for b in range(3):  # KL(N(m, S) || N(0, I)) from the covariance matrix itself
        cov, m = chol[b] @ chol[b].T, np.asarray(mean[b], np.float64)
        want = 0.5 * (np.trace(cov) + m @ m - 4 - np.linalg.slogdet(cov)[1])
        assert kl[b] == pytest.approx(want, rel=1e-5)
    # the ELBO's KL is that closed form (the same for every key), and the Monte Carlo one's mean
    cfg = apply_overrides(
        get_config("vae"),
        ["model.posterior=full_covariance", "model.latent_dim=4", "model.encoder_hidden=32", "model.decoder_hidden=32"],
    )
    model = build_model(cfg.model, (28, 28, 1), 10)
    x = jnp.asarray(rng.uniform(size=(3, 28, 28, 1)), jnp.float32)
    params = model.init(jax.random.key(0), x)
    from cvae_jax.core import objectives

    terms = jax.jit(objectives.make_elbo_terms(model, num_classes=10))
    monte_carlo = jax.jit(objectives.make_elbo_terms(model, num_classes=10, analytic_kl=False))
    exact = [np.asarray(terms(params, {"image": x}, jax.random.key(k))["kl"]) for k in range(2)]
    np.testing.assert_array_equal(exact[0], exact[1])
    keys = jax.random.split(jax.random.key(1), 400)
    draws = np.asarray(jax.vmap(lambda k: monte_carlo(params, {"image": x}, k)["kl"])(keys))
    standard_error = draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - exact[0]) < 4 * standard_error), (draws.mean(0), exact[0], standard_error)


def test_iaf_log_density_is_the_base_density_less_the_jacobian_log_determinant():
    mean, log_var, rng = _inputs(b=2, d=5)
    q = posteriors.IAF(5, steps=3, hidden=16, context_features=6)
    context = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
    params = _far_from_identity(q, jnp.zeros((1, 2, 5)), context)
    z, log_q = jax.jit(lambda k: q.apply(params, k, mean, log_var, 4, context, method=q.sample))(jax.random.key(3))
    z0 = mean + jnp.exp(0.5 * log_var) * distributions.normal(jax.random.key(3), (4, 2, 5))[0]

    def flow(z0, c):  # one example's z_0 [D] to its z_T [D]
        out, _ = q.apply(params, z0[None, None, :], c[None])
        return out[0, 0]

    z_t, jac = jax.jit(lambda z0: (jax.vmap(flow)(z0, context), jax.vmap(jax.jacfwd(flow))(z0, context)))(z0)
    for b in range(2):
        _, log_det = np.linalg.slogdet(np.asarray(jac[b], np.float64))
        base = float(distributions.diag_gaussian_log_prob(z0[b], mean[b], log_var[b]))
        assert float(log_q[0, b]) == pytest.approx(base - log_det, rel=1e-4, abs=1e-4)
        np.testing.assert_allclose(z_t[b], z[0, b], rtol=1e-5, atol=1e-6)


def test_each_posterior_scores_any_z_as_its_sampler_scored_its_own():
    """log_prob(z) of the sampler's z is the sampler's log q (the IAF inverted to z_0 first), and the
    full-covariance density of any z is scipy's multivariate normal."""
    mean, log_var, rng = _inputs(b=3, d=5)
    full = posteriors.FullCovariance(5)
    context = jnp.asarray(rng.normal(scale=0.5, size=(3, full.context_dim)), jnp.float32)
    z, log_q = full.apply({}, jax.random.key(0), mean, log_var, 4, context, method=full.sample)
    np.testing.assert_allclose(
        full.apply({}, z, mean, log_var, context, method=full.log_prob), log_q, rtol=1e-5, atol=1e-4
    )
    anywhere = jnp.asarray(rng.normal(scale=2.0, size=(6, 3, 5)), jnp.float32)
    chol = np.asarray(full.apply({}, log_var, context, method=full.cholesky), np.float64)
    got = np.asarray(full.apply({}, anywhere, mean, log_var, context, method=full.log_prob))
    for b in range(3):
        want = stats.multivariate_normal(np.asarray(mean[b], np.float64), chol[b] @ chol[b].T).logpdf(
            np.asarray(anywhere[:, b], np.float64)
        )
        np.testing.assert_allclose(got[:, b], want, rtol=1e-4, atol=1e-4)

    iaf = posteriors.IAF(5, steps=3, hidden=16, context_features=6)
    h = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
    params = _far_from_identity(iaf, jnp.zeros((1, 3, 5)), h)
    z, log_q = jax.jit(lambda k: iaf.apply(params, k, mean, log_var, 4, h, method=iaf.sample))(jax.random.key(3))
    log_prob = jax.jit(lambda z: iaf.apply(params, z, mean, log_var, h, method=iaf.log_prob))
    np.testing.assert_allclose(log_prob(z), log_q, rtol=1e-4, atol=1e-4)
    z0 = mean + jnp.exp(0.5 * log_var) * distributions.normal(jax.random.key(3), (4, 3, 5))
    back, _ = jax.jit(lambda z: iaf.apply(params, z, h, inverse=True))(z)
    np.testing.assert_allclose(back, z0, rtol=1e-4, atol=1e-4)
    # a z scored under another example's posterior (the mutual information's table) inverts as well
    swapped = log_prob(z[:, ::-1])
    assert np.all(np.isfinite(swapped)) and not np.allclose(swapped, log_q[:, ::-1])


def test_mutual_information_of_any_posterior_is_he_et_al_s_estimate_from_its_densities():
    """The table of log q(z_i | x_n) from the posterior's own log_prob, against the same estimate built
    from scipy's densities; zero when q ignores x."""
    rng = np.random.default_rng(0)
    n, d = 40, 3
    full = posteriors.FullCovariance(d)
    mean = rng.normal(size=(n, d))
    log_var = rng.normal(scale=0.3, size=(n, d)) - 1.0
    context = rng.normal(scale=0.3, size=(n, full.context_dim))
    chol = np.asarray(
        full.apply({}, jnp.asarray(log_var, jnp.float32), jnp.asarray(context, jnp.float32), method=full.cholesky),
        np.float64,
    )
    z = np.stack([mean[i] + chol[i] @ rng.normal(size=d) for i in range(n)]).astype(np.float32)
    table = np.array(
        [[stats.multivariate_normal(mean[j], chol[j] @ chol[j].T).logpdf(z[i]) for j in range(n)] for i in range(n)]
    )
    want = np.mean(np.diag(table)) - np.mean(np.logaddexp.reduce(table, axis=1) - np.log(n))

    class Model:  # what posterior_mutual_information asks of a model
        def apply(self, params, zb, mean, log_var, context, method):
            return full.apply({}, zb, mean, log_var, context, method=full.log_prob)

        posterior_log_prob = None

    as_f32 = [jnp.asarray(a, jnp.float32) for a in (mean, log_var, context)]
    got = evaluate.posterior_mutual_information(Model(), {}, *as_f32, z, block=16)
    assert got == pytest.approx(want, abs=1e-3) and 0 < got < np.log(n)
    same = [jnp.broadcast_to(a[:1], a.shape) for a in as_f32]  # every example the same posterior
    assert evaluate.posterior_mutual_information(Model(), {}, *same, z, block=16) == pytest.approx(0.0, abs=1e-5)


def test_made_masks_make_output_d_depend_only_on_earlier_inputs():
    mask_in, mask_out = posteriors.made_masks(4, 10)
    connected = np.asarray(mask_in @ mask_out) > 0  # [input, output]: a path through the hidden layer
    assert not np.any(np.tril(connected))  # input i reaches output d only when i < d
    assert np.all(connected[np.triu_indices(4, 1)])  # and every such pair is reached


def test_posteriors_with_a_context_widen_the_encoder_and_refuse_bad_sizes():
    cfg = apply_overrides(get_config("vae"), ["model.posterior=full_covariance", "model.latent_dim=4"])
    model = build_model(cfg.model, (28, 28, 1), 10)
    params = model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
    assert params["params"]["encoder"]["context"]["kernel"].shape[-1] == 6  # 4 * 3 / 2 entries below the diagonal
    with pytest.raises(ConfigError, match="iaf_hidden"):
        apply_overrides(get_config("vae"), ["model.posterior=iaf", "model.latent_dim=8", "model.iaf_hidden=4"])


@pytest.mark.slow
@pytest.mark.parametrize("posterior", ["full_covariance", "iaf"])
def test_richer_posteriors_train_evaluate_and_resume(small_digits, tmp_path, posterior):
    settings = [f"model.posterior={posterior}", "model.latent_dim=4", "model.encoder_hidden=64"]
    settings += ["model.decoder_hidden=64", "train.batch_size=32", "checkpoint.every_epochs=1"]
    cfg = apply_overrides(get_config("vae"), [*settings, "train.epochs=3"])
    straight = train_and_evaluate(cfg, tmp_path / "straight", dataset=small_digits, progress=False)
    tests = [e for e in straight.history if e["split"] == "test"]
    assert tests[-1]["neg_elbo"] < tests[0]["neg_elbo"] - 20
    train_and_evaluate(
        apply_overrides(cfg, ["train.epochs=2"]), tmp_path / "resumed", dataset=small_digits, progress=False
    )
    resumed = train_and_evaluate(cfg, tmp_path / "resumed", dataset=small_digits, progress=False)
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(a, b)
    result = evaluate.evaluate_model(
        straight.model, straight.state.params, cfg, small_digits, num_importance_samples=100, num_examples=200
    )
    # the K-sample bound is at least as tight as the ELBO, on average over examples
    assert math.isfinite(result["nll"]) and result["nll"] <= result["neg_elbo"] + 0.5
    assert 0 <= result["active_units"] <= 4
    # the mutual information from the posterior's own densities: within its estimator's range [0, log N]
    assert result["mutual_information_examples"] == 200
    assert 0.05 < result["mutual_information"] < math.log(200), result["mutual_information"]
