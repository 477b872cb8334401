"""Gradient clipping, skipping updates on gradient spikes and the parameters' moving average
(train.grad_clip, train.skip_threshold, train.ema_decay), each against its definition."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvae_jax.config import ConfigError, TrainConfig, validate_train
from cvae_jax.training.step import TrainState, evaluation_params, make_optimizer


def _run(cfg: TrainConfig, grads_seq, params):
    tx = make_optimizer(cfg)
    state = TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params))
    for grads in grads_seq:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state)
    return state


def test_clipping_gives_the_update_of_the_rescaled_gradient():
    params, grads = {"w": jnp.ones(4)}, {"w": jnp.array([3.0, 4.0, 0.0, 0.0])}  # global norm 5
    clipped = _run(TrainConfig(optimizer="sgd", learning_rate=0.1, grad_clip=1.0), [grads], params)
    by_hand = _run(TrainConfig(optimizer="sgd", learning_rate=0.1), [{"w": grads["w"] / 5.0}], params)
    np.testing.assert_allclose(clipped.params["w"], by_hand.params["w"], rtol=1e-6)


def test_a_gradient_above_the_skip_threshold_leaves_parameters_and_moments_alone():
    params = {"w": jnp.ones(3)}
    small, spike = {"w": jnp.array([0.1, -0.2, 0.3])}, {"w": jnp.array([100.0, 0.0, 0.0])}
    cfg = TrainConfig(optimizer="adam", learning_rate=0.01, skip_threshold=10.0)
    with_spike = _run(cfg, [small, spike, small], params)
    without = _run(TrainConfig(optimizer="adam", learning_rate=0.01), [small, small], params)
    np.testing.assert_allclose(with_spike.params["w"], without.params["w"], rtol=1e-6)


def test_ema_is_the_moving_average_of_the_parameters_after_each_update():
    params, decay = {"w": jnp.zeros(2)}, 0.9
    grads = [{"w": jnp.array([1.0, -1.0]) * (i + 1)} for i in range(4)]
    state = _run(TrainConfig(optimizer="sgd", learning_rate=0.5, ema_decay=decay), grads, params)
    plain = _run(TrainConfig(optimizer="sgd", learning_rate=0.5), grads, params)
    np.testing.assert_allclose(state.params["w"], plain.params["w"], rtol=1e-6)  # training itself unchanged
    ema = np.zeros(2)  # the average by hand, over the parameters after each update (initial value: params)
    sgd = make_optimizer(TrainConfig(optimizer="sgd", learning_rate=0.5))
    current, opt_state = params, sgd.init(params)
    for g in grads:
        updates, opt_state = sgd.update(g, opt_state, current)
        current = optax.apply_updates(current, updates)
        ema = decay * ema + (1 - decay) * np.asarray(current["w"])
    np.testing.assert_allclose(evaluation_params(state)["w"], ema, rtol=1e-6)
    assert evaluation_params(plain) is plain.params  # without EMA: the trained parameters


@pytest.mark.parametrize("field, value", [("grad_clip", -1.0), ("skip_threshold", -0.5), ("ema_decay", 1.0)])
def test_bad_values_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        validate_train(TrainConfig(**{field: value}))


@pytest.mark.slow
def test_an_ema_run_evaluates_and_saves_the_average(tmp_path):
    from cvae_jax.config import apply_overrides, get_config
    from cvae_jax.tasks.images import load_run, train_and_evaluate

    cfg = apply_overrides(
        get_config("vae", "article"),
        ["train.epochs=1", "train.batch_size=200", "train.ema_decay=0.9", "checkpoint.async_save=false"],
    )
    run = train_and_evaluate(cfg, tmp_path / "run", progress=False)
    loaded = load_run(tmp_path / "run")
    for a, b in zip(jax.tree.leaves(evaluation_params(run.state)), jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(a, b)
    assert not all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(run.state.params), jax.tree.leaves(loaded.params))
    )
