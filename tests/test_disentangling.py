"""The disentangling, MMD and multi-sample objectives against their papers' definitions, computed here a
second way (loops over a tiny batch, closed forms), and learning-rate schedules against their formulas."""

import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvae_jax.config import ConfigError, TrainConfig, apply_overrides, get_config
from cvae_jax.core import aggregate, critics, distributions, objectives
from cvae_jax.tasks.images import train_and_evaluate
from cvae_jax.training.step import learning_rate, make_optimizer


def _batch(b=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(b, d)).astype(np.float32)
    log_var = rng.normal(scale=0.5, size=(b, d)).astype(np.float32)
    z = (mean + np.exp(0.5 * log_var) * rng.normal(size=(b, d))).astype(np.float32)
    return z, mean, log_var


def _normal_pdf(x, mean, var):
    return math.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def _brute_aggregate(z, mean, log_var, n, estimator):
    """Chen et al. 2018, eq. S5 (MWS) and appendix C.2 (MSS), written as sums over the batch."""
    b, d = z.shape
    m = b - 1
    log_qz, log_prod = [], []
    for i in range(b):
        weights = []
        for j in range(b):
            if estimator == "mws":
                weights.append(1.0 / (n * b))
            elif j == i:
                weights.append(1.0 / n)
            elif j == (i + 1) % b:
                weights.append((n - m) / (n * m))
            else:
                weights.append(1.0 / m)
        var = np.exp(log_var.astype(np.float64))
        joint = sum(
            w * np.prod([_normal_pdf(z[i, k], mean[j, k], var[j, k]) for k in range(d)]) for j, w in enumerate(weights)
        )
        marginals = [
            sum(w * _normal_pdf(z[i, k], mean[j, k], var[j, k]) for j, w in enumerate(weights)) for k in range(d)
        ]
        log_qz.append(math.log(joint))
        log_prod.append(sum(math.log(p) for p in marginals))
    return np.array(log_qz), np.array(log_prod)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_aggregate_posterior_estimators_match_their_definitions(estimator):
    z, mean, log_var = _batch()
    got = aggregate.log_aggregate(jnp.asarray(z), jnp.asarray(mean), jnp.asarray(log_var), 1000, estimator)
    want = _brute_aggregate(z, mean, log_var, 1000, estimator)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
    if estimator == "mss":  # a proper mixture: each sample's weights sum to one
        np.testing.assert_allclose(np.exp(aggregate.log_weights(5, 1000, "mss")).sum(1), 1.0, rtol=1e-6)


def test_with_the_whole_data_set_as_batch_mws_is_the_exact_aggregate_posterior_less_log_n():
    z, mean, log_var = _batch(b=6, d=2, seed=1)
    log_qz, _ = aggregate.log_aggregate(jnp.asarray(z), jnp.asarray(mean), jnp.asarray(log_var), 6, "mws")
    var = np.exp(log_var.astype(np.float64))
    exact = [
        math.log(np.mean([np.prod([_normal_pdf(z[i, k], mean[j, k], var[j, k]) for k in range(2)]) for j in range(6)]))
        for i in range(6)
    ]
    np.testing.assert_allclose(np.asarray(log_qz) + math.log(6), exact, rtol=1e-5)


def test_dip_covariances_and_penalty_match_their_definitions():
    _, mean, log_var = _batch(b=50, d=4, seed=2)
    cov_i = np.asarray(aggregate.dip_covariance(jnp.asarray(mean), jnp.asarray(log_var), "i"))
    np.testing.assert_allclose(cov_i, np.cov(mean.T, bias=True), rtol=1e-4, atol=1e-6)
    cov_ii = np.asarray(aggregate.dip_covariance(jnp.asarray(mean), jnp.asarray(log_var), "ii"))
    np.testing.assert_allclose(cov_ii, np.cov(mean.T, bias=True) + np.diag(np.exp(log_var).mean(0)), rtol=1e-4)
    penalty = float(aggregate.dip_penalty(jnp.asarray(cov_ii), 10.0, 100.0))
    off = sum(cov_ii[i, j] ** 2 for i in range(4) for j in range(4) if i != j)
    assert penalty == pytest.approx(10.0 * off + 100.0 * sum((cov_ii[i, i] - 1) ** 2 for i in range(4)), rel=1e-5)
    assert float(aggregate.dip_penalty(jnp.eye(4), 10.0, 100.0)) == 0.0


@pytest.mark.parametrize("kind", ["rbf", "imq"])
def test_mmd_is_the_unbiased_u_statistic(kind):
    x, y, _ = _batch(b=7, d=3, seed=3)
    y = y[:5]
    c = 2.0 * 3 * 0.7**2

    def k(a, b):
        sq = float(np.sum((a - b) ** 2))
        return math.exp(-sq / c) if kind == "rbf" else c / (c + sq)

    want = (
        sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
        + sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
        - 2 * sum(k(a, b) for a in x for b in y) / 35
    )
    assert float(aggregate.mmd(jnp.asarray(x), jnp.asarray(y), kind, 0.7)) == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_rbf_mmd_of_two_gaussians_matches_its_closed_form():
    """x ~ N(0, I), y ~ N(a, I): E k = (1 + 4/C)^(-D/2) exp(-|m|^2 / (C + 4)) for x - y ~ N(m, 2I), so
    MMD^2 = 2 (1 + 4/C)^(-D/2) (1 - exp(-|a|^2 / (C + 4)))."""
    d, n = 2, 3000
    c = 2.0 * d
    shift = np.array([1.0, 0.5], np.float32)
    k1, k2 = jax.random.split(jax.random.key(0))
    x, y = jax.random.normal(k1, (n, d)), jax.random.normal(k2, (n, d)) + shift
    closed = 2 * (1 + 4 / c) ** (-d / 2) * (1 - math.exp(-float(shift @ shift) / (c + 4)))
    assert float(aggregate.mmd(x, y, "rbf", 1.0)) == pytest.approx(closed, rel=0.1)
    assert abs(float(aggregate.mmd(x, jax.random.normal(k2, (n, d)), "rbf", 1.0))) < 0.1 * closed


@pytest.fixture(scope="module")
def tiny(small_digits):
    cfg = apply_overrides(
        get_config("vae"),
        ["model.latent_dim=3", "model.encoder_hidden=32", "model.decoder_hidden=32", "train.epochs=1"],
    )
    run = train_and_evaluate(cfg, None, dataset=small_digits, progress=False)
    batch = {"image": jnp.asarray(small_digits.test.images[:16]), "label": jnp.asarray(small_digits.test.labels[:16])}
    return run, batch


@pytest.mark.slow
def test_miwae_is_iwae_with_one_group_and_the_mean_elbo_with_one_sample(tiny):
    run, batch = tiny
    key = jax.random.key(5)
    miwae = objectives.make_miwae_terms(run.model, num_classes=10, groups=1, num_samples=6)
    iwae = objectives.make_iwae_terms(run.model, num_classes=10, num_samples=6)
    np.testing.assert_allclose(
        miwae(run.state.params, batch, key)["neg_miwae"], iwae(run.state.params, batch, key)["neg_iwae"], rtol=1e-6
    )
    mean_elbo = objectives.make_miwae_terms(run.model, num_classes=10, groups=6, num_samples=1)
    np.testing.assert_allclose(
        mean_elbo(run.state.params, batch, key)["neg_miwae"], iwae(run.state.params, batch, key)["neg_elbo"], rtol=1e-5
    )


def test_tc_terms_decompose_the_sampled_kl(tiny):
    run, batch = tiny
    terms = objectives.make_tc_terms(run.model, num_classes=10, dataset_size=1000, estimator="mss")
    t = terms(run.state.params, batch, jax.random.key(1))
    sampled = objectives.make_elbo_terms(run.model, num_classes=10, analytic_kl=False)(
        run.state.params, batch, jax.random.key(1)
    )["kl"]
    np.testing.assert_allclose(t["mi"] + t["tc"] + t["dw_kl"], sampled, rtol=1e-4, atol=1e-4)


def test_learning_rate_schedules_follow_their_formulas():
    cos = TrainConfig(lr_schedule="cosine", lr_warmup_steps=10, learning_rate=2.0, lr_final_fraction=0.1)
    f = learning_rate(cos, 110)
    for step in (0, 5, 10, 35, 60, 110):
        if step <= 10:
            want = 2.0 * step / 10
        else:
            want = 0.2 + (2.0 - 0.2) * 0.5 * (1 + math.cos(math.pi * (step - 10) / 100))
        assert float(f(step)) == pytest.approx(want, rel=1e-5, abs=1e-6)
    lin = learning_rate(TrainConfig(lr_schedule="linear", learning_rate=1.0), 100)
    assert [float(lin(s)) for s in (0, 25, 100)] == pytest.approx([1.0, 0.75, 0.0])
    assert learning_rate(TrainConfig(learning_rate=0.3), None) == 0.3  # constant: no schedule in the state
    # a warm-up from 0: the first update is exactly zero, the next is not
    tx = make_optimizer(TrainConfig(lr_warmup_steps=4), 100)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    grads = {"w": jnp.array([1.0, -2.0, 3.0])}
    first, state = tx.update(grads, state, params)
    second, _ = tx.update(grads, state, optax.apply_updates(params, first))
    assert not np.any(np.asarray(first["w"])) and np.all(np.asarray(second["w"]) != 0)
    with pytest.raises(ValueError, match="total_steps"):
        learning_rate(cos, None)


OBJECTIVES = [
    ("beta_tcvae", ["train.beta=4", "train.tc_estimator=mws"]),
    ("beta_tcvae", ["train.beta=4"]),
    ("factor_vae", ["train.critic_hidden=64,64"]),
    ("dip_vae_i", []),
    ("dip_vae_ii", ["train.dip_lambda_od=5", "train.dip_lambda_d=5"]),
    ("info_vae", ["train.mmd_weight=100"]),
    ("wae", ["train.mmd_kernel=rbf"]),
    ("miwae", ["train.miwae_groups=2", "train.iwae_samples=3"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("objective, options", OBJECTIVES)
def test_each_objective_trains_by_name_resumes_and_reports_its_terms(small_digits, tmp_path, objective, options):
    base = ["model.latent_dim=4", "model.encoder_hidden=64", "model.decoder_hidden=64", "train.epochs=3"]
    base += ["train.batch_size=32", "train.lr_schedule=cosine", "train.lr_warmup_steps=10", "checkpoint.every_epochs=1"]
    cfg = apply_overrides(get_config("vae"), [*base, f"train.objective={objective}", *options])
    run = train_and_evaluate(cfg, tmp_path / "straight", dataset=small_digits, progress=False)
    # interrupted after epoch 2 (a copy of the run, its last checkpoint removed), then resumed: the
    # same state bit for bit
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    last = max(int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir() if p.name.isdigit())
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / str(last))
    resumed = train_and_evaluate(cfg, tmp_path / "resumed", dataset=small_digits, progress=False)
    for a, b in zip(jax.tree.leaves(run.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    tests = [e for e in run.history if e["split"] == "test"]
    assert all(math.isfinite(e["neg_elbo"]) for e in tests)
    assert tests[-1]["neg_elbo"] < tests[0]["neg_elbo"] - 20  # it learned: the ELBO, whatever the loss
    extra = {"beta_tcvae": "tc", "dip_vae_i": "dip_penalty", "dip_vae_ii": "dip_penalty", "info_vae": "mmd"}
    extra["factor_vae"] = "tc_critic"
    extra["wae"] = "mmd"
    if objective in extra:
        assert math.isfinite(tests[-1][extra[objective]])


def test_objectives_refuse_the_elbo_s_schedules_they_do_not_read(small_digits):
    cfg = apply_overrides(get_config("vae"), ["train.objective=wae", "train.kl_schedule=linear", "train.epochs=1"])
    with pytest.raises(ConfigError, match="kl_schedule"):
        train_and_evaluate(cfg, None, dataset=small_digits, progress=False)
    with pytest.raises(ConfigError, match="train.info_alpha"):
        apply_overrides(get_config("vae"), ["train.info_alpha=2"])


def test_permute_dims_shuffles_each_latent_on_its_own():
    z = jnp.arange(40.0).reshape(10, 4) + 100 * jnp.arange(4.0)
    out = np.asarray(critics.permute_dims(jax.random.key(0), z))
    for d in range(4):
        assert sorted(out[:, d]) == sorted(np.asarray(z[:, d]))  # each column a permutation of itself
    rows = {tuple(r) for r in np.asarray(z)}
    assert sum(tuple(r) not in rows for r in out) > 5  # and rows are mixed across examples


@pytest.mark.slow
def test_factor_vae_gradients_train_each_part_on_its_own_loss(small_digits):
    """The one loss's gradient is, for the VAE's parameters, that of -ELBO + gamma TC with the
    discriminator held fixed, and for the discriminator's, that of its cross-entropy on q(z) samples
    against their permutation (Kim & Mnih 2018, algorithm 2)."""
    from cvae_jax.tasks.images import build, init_for

    cfg = apply_overrides(
        get_config("vae"),
        ["train.objective=factor_vae", "train.critic_hidden=8", "model.latent_dim=3", "model.encoder_hidden=16"]
        + ["model.decoder_hidden=16", "train.factor_gamma=7"],
    )
    parts = build(cfg, small_digits.image_shape, small_digits.num_classes)
    params = init_for(parts, cfg, small_digits.image_shape, small_digits.num_classes).params
    batch = {"image": jnp.asarray(small_digits.train.images[:16]), "label": jnp.asarray(small_digits.train.labels[:16])}
    key, model = jax.random.key(2), parts.model
    grads = jax.grad(lambda p: parts.loss(p, batch, key)[0])(params)

    def z_of(p):  # the step's posterior sample, as the objective draws it
        x = batch["image"]
        mean, log_var = model.apply(p, x, method=model.encode)
        return (
            mean
            + jnp.exp(0.5 * log_var)
            * distributions.normal(jax.random.fold_in(key, objectives.LATENT), (1, *mean.shape))[0]
        )

    def vae_loss(vae_params):
        p = {"params": {**vae_params, "critic": params["params"]["critic"]}}
        terms = objectives.make_elbo_terms(model, num_classes=10)(p, batch, key)
        logits = model.apply(p, z_of(p), method=model.critic_logits)
        return jnp.mean(terms["neg_elbo"] + 7.0 * (logits[:, 0] - logits[:, 1]))

    def critic_loss(critic_params):
        p = {"params": {**params["params"], "critic": critic_params}}
        z = z_of(params)
        shuffled = critics.permute_dims(jax.random.fold_in(key, objectives.PERMUTE), z)
        real = jax.nn.log_softmax(model.apply(p, z, method=model.critic_logits))[:, 0]
        fake = jax.nn.log_softmax(model.apply(p, shuffled, method=model.critic_logits))[:, 1]
        return -0.5 * jnp.mean(real + fake)

    vae_params = {k: v for k, v in params["params"].items() if k != "critic"}
    want_vae = jax.grad(vae_loss)(vae_params)
    want_critic = jax.grad(critic_loss)(params["params"]["critic"])
    for got, want in (
        (grads["params"]["critic"], want_critic),
        ({k: grads["params"][k] for k in vae_params}, want_vae),
    ):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


@pytest.mark.slow
def test_factor_vae_resumes_bit_identically_with_its_discriminator(small_digits, tmp_path):
    settings = ["train.objective=factor_vae", "train.critic_hidden=32,32", "model.latent_dim=4"]
    settings += [
        "model.encoder_hidden=64",
        "model.decoder_hidden=64",
        "train.batch_size=32",
        "checkpoint.every_epochs=1",
    ]
    cfg = apply_overrides(get_config("vae"), [*settings, "train.epochs=3"])
    straight = train_and_evaluate(cfg, tmp_path / "straight", dataset=small_digits, progress=False)
    train_and_evaluate(
        apply_overrides(cfg, ["train.epochs=2"]), tmp_path / "resumed", dataset=small_digits, progress=False
    )
    resumed = train_and_evaluate(cfg, tmp_path / "resumed", dataset=small_digits, progress=False)
    assert "critic" in straight.state.params["params"]
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    train = [e for e in straight.history if e["split"] == "train"]
    assert all(0.0 <= e["critic_accuracy"] <= 1.0 and math.isfinite(e["critic_loss"]) for e in train)
