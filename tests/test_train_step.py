"""The ELBO terms, the pure train step under jit, compile-once, and seed reproducibility."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.config import apply_overrides, get_config
from cvae_jax.core import objectives
from cvae_jax.tasks.images import build, init_for, train_and_evaluate
from cvae_jax.training.step import all_finite, make_train_step


def setup(kind="cvae", overrides=()):
    cfg = apply_overrides(
        get_config(kind), ["model.latent_dim=4", "model.encoder_hidden=32", "model.decoder_hidden=32", *overrides]
    )
    parts = build(cfg, (28, 28, 1), 10)
    state = init_for(parts, cfg, (28, 28, 1), 10)
    return cfg, parts, state


def batch_of(ds, n=16):
    return {"image": jnp.asarray(ds.train.images[:n]), "label": jnp.asarray(ds.train.labels[:n])}


def test_elbo_terms_match_an_independent_computation(small_digits):
    """recon sums binary cross-entropy over all 784 pixels; kl is the closed form; neg_elbo adds them."""
    _, parts, state = setup()
    batch = batch_of(small_digits)
    key = jax.random.key(42)
    terms = parts.terms(state.params, batch, key)
    model, cond = parts.model, jax.nn.one_hot(batch["label"], 10)
    mean, log_var = model.apply(state.params, batch["image"], cond, method=model.encode)
    eps = jax.random.normal(jax.random.fold_in(key, objectives.LATENT), mean.shape)
    z = np.asarray(mean) + np.exp(0.5 * np.asarray(log_var)) * np.asarray(eps)
    logits = np.asarray(model.apply(state.params, jnp.asarray(z), cond, method=model.decode)["logits"], np.float64)
    x = np.asarray(batch["image"], np.float64)
    p = 1 / (1 + np.exp(-logits))
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(16, -1).sum(1)
    m, lv = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    kl = 0.5 * (np.exp(lv) + m**2 - 1 - lv).sum(1)
    assert terms["recon"].shape == terms["kl"].shape == (16,)
    np.testing.assert_allclose(terms["recon"], bce, rtol=1e-4)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(terms["neg_elbo"], bce + kl, rtol=1e-4)


def test_beta_weights_the_loss_but_not_the_reported_elbo(small_digits):
    _, parts, state = setup()
    batch, key = batch_of(small_digits), jax.random.key(0)
    loss1, m1 = objectives.make_elbo_loss(parts.terms, beta=1.0)(state.params, batch, key)
    loss4, m4 = objectives.make_elbo_loss(parts.terms, beta=4.0)(state.params, batch, key)
    np.testing.assert_allclose(m1["neg_elbo"], m4["neg_elbo"])
    np.testing.assert_allclose(loss4 - loss1, 3.0 * m1["kl"], atol=1e-3)  # float32 cancellation at ~550
    np.testing.assert_allclose(loss1, m1["neg_elbo"], rtol=1e-6)


def test_dynamic_binarization_feeds_binary_pixels(small_digits):
    _, parts, state = setup(overrides=["data.binarize=true"])
    batch = batch_of(small_digits)
    # Binary targets: recon is the BCE of a 0/1 image, which differs from the BCE of intensities.
    _, plain, _ = setup()
    a = parts.terms(state.params, batch, jax.random.key(0))["recon"]
    b = plain.terms(state.params, batch, jax.random.key(0))["recon"]
    assert not np.allclose(a, b)
    c = parts.terms(state.params, batch, jax.random.key(1))["recon"]
    assert not np.allclose(a, c)  # redrawn with the key


@pytest.mark.slow
def test_jitted_and_unjitted_step_agree(small_digits):
    _, parts, state = setup()
    step = make_train_step(parts.loss, parts.tx)
    batch, key = batch_of(small_digits), jax.random.key(7)
    s_eager, m_eager = step(state, batch, key)
    s_jit, m_jit = jax.jit(step)(state, batch, key)
    for a, b in zip(jax.tree.leaves(s_eager.params), jax.tree.leaves(s_jit.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_eager["neg_elbo"], m_jit["neg_elbo"], rtol=1e-5)
    assert int(s_jit.step) == 1


def test_step_compiles_once_and_is_reused(small_digits):
    _, parts, state = setup()
    traces = []

    def counting_loss(params, batch, key, step):
        traces.append(1)  # runs only while tracing
        return parts.loss(params, batch, key, step)

    step = jax.jit(make_train_step(counting_loss, parts.tx))
    batch, key = batch_of(small_digits), jax.random.key(0)
    losses = []
    for _ in range(6):
        state, metrics = step(state, batch, key)
        losses.append(float(metrics["loss"]))
    assert len(traces) == 1
    assert step._cache_size() == 1
    assert int(state.step) == 6
    assert losses[-1] < losses[0]


def test_step_noise_depends_on_step_number(small_digits):
    """The key is folded with state.step: the same base key gives fresh noise at every step."""
    _, parts, state = setup()
    step = jax.jit(make_train_step(parts.loss, parts.tx))
    batch, key = batch_of(small_digits), jax.random.key(0)
    _, m0 = step(state, batch, key)
    _, m1 = step(state.replace(step=jnp.int32(1)), batch, key)
    assert float(m0["kl"]) == pytest.approx(float(m1["kl"]))  # same params: same posterior
    assert float(m0["recon"]) != float(m1["recon"])  # other latent noise


def _params_after(ds, seed):
    cfg = apply_overrides(
        get_config("cvae"),
        ["model.latent_dim=4", "model.encoder_hidden=32", "model.decoder_hidden=32", "train.epochs=2", f"seed={seed}"],
    )
    run = train_and_evaluate(cfg, None, dataset=ds, progress=False)
    return jax.tree.leaves(run.state.params), run.history


@pytest.mark.slow
def test_same_seed_same_results_other_seed_different(small_digits):
    p1, h1 = _params_after(small_digits, 0)
    p2, h2 = _params_after(small_digits, 0)
    p3, h3 = _params_after(small_digits, 1)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)
    assert [e["neg_elbo"] for e in h1] == [e["neg_elbo"] for e in h2]
    assert any(not np.array_equal(a, c) for a, c in zip(p1, p3))
    assert h1[-1]["neg_elbo"] != h3[-1]["neg_elbo"]


@pytest.mark.slow
def test_fused_and_stepped_epochs_give_the_same_training(small_digits):
    """steps_per_call only changes how steps are dispatched, never which steps run."""
    runs = []
    for k in (0, 1, 5):
        cfg = apply_overrides(
            get_config("vae"),
            [
                "model.latent_dim=4",
                "model.encoder_hidden=32",
                "model.decoder_hidden=32",
                "train.epochs=2",
                f"train.steps_per_call={k}",
            ],
        )
        runs.append(train_and_evaluate(cfg, None, dataset=small_digits, progress=False))
    for other in runs[1:]:
        for a, b in zip(jax.tree.leaves(runs[0].state.params), jax.tree.leaves(other.state.params)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.slow
def test_unrolled_microbatches_reach_the_step_and_train_the_same(small_digits, monkeypatch):
    """train.unroll_microbatches goes from the config to the compiled step, and a run with unrolled
    chunks ends with the parameters of the same run with scanned chunks."""
    from cvae_jax.training import step as train

    seen = []
    real = train.accumulated_grads
    monkeypatch.setattr(train, "accumulated_grads", lambda *a: seen.append(a[1:]) or real(*a))
    runs = []
    for unroll in ("false", "true"):
        cfg = apply_overrides(
            get_config("vae"),
            [
                "model.latent_dim=4",
                "model.encoder_hidden=32",
                "model.decoder_hidden=32",
                "train.epochs=1",
                "train.microbatches=4",
                f"train.unroll_microbatches={unroll}",
            ],
        )
        runs.append(train_and_evaluate(cfg, None, dataset=small_digits, progress=False))
    assert (4, False) in seen and (4, True) in seen
    for a, b in zip(jax.tree.leaves(runs[0].state.params), jax.tree.leaves(runs[1].state.params)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("unroll", [False, True])
def test_microbatched_gradient_is_the_mean_of_the_chunk_gradients(small_digits, unroll):
    from cvae_jax.training.step import accumulated_grads

    _, parts, state = setup()
    batch, key = batch_of(small_digits, 16), jax.random.key(3)
    grads, metrics = jax.jit(accumulated_grads(parts.loss, 4, unroll))(state.params, batch, key, 0)
    # Independent: four separate gradients of 4-example chunks, chunk i with key fold_in(key, i).
    chunks = [
        jax.grad(parts.loss, has_aux=True)(
            state.params, jax.tree.map(lambda x: x[4 * i : 4 * i + 4], batch), jax.random.fold_in(key, i), 0
        )
        for i in range(4)
    ]
    expected = jax.tree.map(lambda *g: sum(g) / 4, *[c[0] for c in chunks])
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["neg_elbo"], np.mean([c[1]["neg_elbo"] for c in chunks]), rtol=1e-5)


def test_microbatches_leave_a_noise_free_gradient_unchanged(small_digits):
    """Without noise the batch-mean gradient does not depend on how the batch is chunked."""
    from cvae_jax.training.step import accumulated_grads

    _, parts, state = setup()

    def loss(params, batch, key, step):  # the reconstruction of the posterior mean: deterministic
        mean, _ = parts.model.apply(
            params, batch["image"], jax.nn.one_hot(batch["label"], 10), method=parts.model.encode
        )
        logits = parts.model.apply(params, mean, jax.nn.one_hot(batch["label"], 10), method=parts.model.decode)
        value = jnp.mean(
            jnp.sum(jnp.logaddexp(0.0, logits["logits"]) - batch["image"] * logits["logits"], axis=(1, 2, 3))
        )
        return value, {"loss": value}

    batch = batch_of(small_digits, 16)
    whole, _ = accumulated_grads(loss, 1)(state.params, batch, jax.random.key(0), 0)
    for unroll in (False, True):
        grads_fn = jax.jit(accumulated_grads(loss, 8, unroll))
        chunked, _ = grads_fn(state.params, batch, jax.random.key(0), 0)
        for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
        # a loop over the chunks, or (unrolled) the chunks written out and no loop left
        assert ("while" in grads_fn.lower(state.params, batch, jax.random.key(0), 0).as_text()) == (not unroll)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, None])
def test_all_finite_agrees_with_an_elementwise_check(bad):
    """The step's one-reduction finiteness check equals the elementwise isfinite over every leaf,
    wherever the bad value sits, also when +Inf and -Inf would cancel in a sum (they give NaN)."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        tree = {
            "w": rng.normal(size=(7, 5)).astype(np.float32),
            "b": rng.normal(size=(5,)).astype(np.float32),
            "deep": [rng.normal(size=(3, 2, 2)).astype(np.float32)],
        }
        leaves = jax.tree.leaves(tree)
        if bad is not None:
            leaf = leaves[trial % len(leaves)]
            leaf.flat[rng.integers(leaf.size)] = bad
            if trial % 2:  # the opposite infinity elsewhere: still non-finite
                other = leaves[(trial + 1) % len(leaves)]
                other.flat[rng.integers(other.size)] = -bad
        expected = all(np.isfinite(leaf).all() for leaf in leaves)
        assert bool(jax.jit(all_finite)(tree)) == expected
