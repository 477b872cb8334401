"""Train state, the pure train/eval steps, and the device-resident epoch loop.

Randomness: one base key from `config.seed`; every other key is derived from it with `fold_in`,
by purpose (INIT, SHUFFLE, TRAIN, EVAL), then inside the step by step number, then by use
(binarization, latent noise). No random state lives anywhere else, so a step's noise depends only
on (seed, step) and a run is reproducible bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cvae_jax.config import TrainConfig
from cvae_jax.core import critics, objectives

# Purposes for keys derived from the base key: fold_in(base_key, purpose).
INIT, SHUFFLE, TRAIN, EVAL, SAMPLE = range(5)

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of updates applied so far
    params: Any
    opt_state: Any


def base_key(seed: int) -> jax.Array:
    return jax.random.key(seed)


def purpose_key(seed: int, purpose: int) -> jax.Array:
    return jax.random.fold_in(base_key(seed), purpose)


class ParamsEMA(NamedTuple):
    """The optimizer state of `params_ema`: an exponential moving average of the parameters."""

    ema: Any


def params_ema(decay: float) -> optax.GradientTransformation:
    """Keeps ema <- decay * ema + (1 - decay) * params after each update, in the optimizer state (so a
    checkpoint saves it and a resumed run continues it); the updates pass through unchanged. Last in
    a chain, where the updates it sees are the ones applied."""

    def init(params):
        return ParamsEMA(ema=jax.tree.map(jnp.asarray, params))

    def update(updates, state, params=None):
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, new)
        return updates, ParamsEMA(ema=ema)

    return optax.GradientTransformation(init, update)


def evaluation_params(state: TrainState):
    """The parameters to evaluate and sample with: the moving average when the run keeps one
    (train.ema_decay > 0), else the trained parameters."""
    found = [
        node.ema
        for node in jax.tree.leaves(state.opt_state, is_leaf=lambda n: isinstance(n, ParamsEMA))
        if isinstance(node, ParamsEMA)
    ]
    return found[0] if found else state.params


def learning_rate(cfg: TrainConfig, total_steps: int | None = None) -> float | optax.Schedule:
    """cfg.learning_rate, or the Optax schedule of train.lr_schedule over a run of `total_steps` steps:
    a linear warm-up from 0 over lr_warmup_steps, then constant, or a cosine or linear decay to
    lr_final_fraction x learning_rate at the last step."""
    peak, warm = cfg.learning_rate, cfg.lr_warmup_steps
    if cfg.lr_schedule == "constant" and warm == 0:
        return peak
    if cfg.lr_schedule != "constant" and not total_steps:
        raise ValueError(f"train.lr_schedule={cfg.lr_schedule} decays over the run: give its total_steps")
    end = peak * cfg.lr_final_fraction
    if cfg.lr_schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warm, max(total_steps, warm + 1), end)
    if cfg.lr_schedule == "linear":
        after = optax.linear_schedule(peak, end, max(total_steps - warm, 1))
    else:
        after = optax.constant_schedule(peak)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warm), after], [warm]) if warm else after


def _part(path, _) -> str:
    """The optimizer branch of a parameter: "critic", "codebook" (a collection of its own) or "model"."""
    if critics.is_critic_path(path):
        return "critic"
    return "codebook" if getattr(path[0], "key", None) == "codebook" else "model"


def _codebook_update() -> optax.GradientTransformation:
    """VQ-VAE's codebook averages: its loss term's gradient is (value - target), so minus it is the step
    to the target (`cvae_jax.core.vqvae.ema_gradient`)."""
    return optax.scale(-1.0)


def make_optimizer(cfg: TrainConfig, total_steps: int | None = None, vq: bool = False) -> optax.GradientTransformation:
    """The Optax optimizer that `cfg.optimizer` names, at `learning_rate(cfg, total_steps)` (a schedule
    needs the run's `total_steps`), with, when configured: gradients clipped to a
    global norm (train.grad_clip), updates skipped when the gradient norm exceeds train.skip_threshold
    (optax.MultiSteps with optax.skip_large_updates, as VDVAE skips gradient spikes), a moving
    average of the parameters for evaluation (train.ema_decay), and train.on_nonfinite=skip's
    optax.apply_if_finite, which leaves the state unchanged on a step with NaN/Inf gradients."""
    lr = learning_rate(cfg, total_steps)
    makers = {
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=cfg.weight_decay),
        "sgd": lambda: optax.sgd(lr, momentum=0.9),
        "rmsprop": lambda: optax.rmsprop(lr),
    }
    if cfg.optimizer not in makers:  # the allowed names are config.Optimizer's
        raise ValueError(f"train.optimizer must be one of {tuple(makers)}, got {cfg.optimizer!r}")
    tx = makers[cfg.optimizer]()
    branches = {"critic": objectives.critic_optimizer(cfg), "codebook": _codebook_update() if vq else None}
    branches = {name: branch for name, branch in branches.items() if branch is not None}
    if branches:  # a critic (FactorVAE's discriminator) or a codebook (VQ-VAE's) updated on its own terms
        tx = optax.multi_transform(
            {"model": tx, **branches}, functools.partial(jax.tree_util.tree_map_with_path, _part)
        )
    if cfg.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    if cfg.skip_threshold > 0:
        skip = functools.partial(optax.skip_large_updates, max_squared_norm=cfg.skip_threshold**2)
        tx = optax.MultiSteps(tx, every_k_schedule=1, should_skip_update_fn=skip).gradient_transformation()
    if cfg.ema_decay > 0:
        tx = optax.chain(tx, params_ema(cfg.ema_decay))
    if cfg.on_nonfinite == "skip":
        tx = optax.apply_if_finite(tx, max_consecutive_errors=cfg.max_consecutive_skips)
    return tx


def init_state(model, tx: optax.GradientTransformation, example: Batch, condition, key) -> TrainState:
    """Initializes parameters from one example batch (only its shapes matter) and the optimizer state.
    The initializers run as one compiled program: the same values as flax's eager model.init, in
    less time in a fresh process."""
    return jax.jit(fresh_state(model, tx))(key, example["image"], condition)


def fresh_state(model, tx: optax.GradientTransformation) -> Callable:
    """init(key, *inputs) -> TrainState at step 0 (`model.init(key, *inputs)`, e.g. inputs = (x,
    condition)): parameters and optimizer state, to be jitted
    as one program (op by op, the optimizer's zeros compile a dozen small programs)."""

    def init(key, *inputs):
        params = model.init(key, *inputs)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init


def accumulated_grads(loss_fn: Callable, microbatches: int = 1, unroll: bool = False) -> Callable:
    """grads(params, batch, key, step) -> (gradients, metrics) of `loss_fn`, computed over
    `microbatches` equal chunks in a lax.scan (chunk i draws noise from fold_in(key, i)) and averaged:
    the same gradient of the batch mean loss, with chunk-sized activation memory. `unroll` writes the
    chunks out one after another instead of a loop: the same values; on XLA:CPU convolutional models
    run faster so (independent chunks run side by side, and convolutions in a loop are slow there),
    dense models slower (the chunks' activations compete for the cache), and compile time grows
    with the number of chunks."""
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if microbatches == 1:
        return grad_fn

    def grads(params, batch, key, step):
        chunks = jax.tree.map(lambda x: x.reshape(microbatches, x.shape[0] // microbatches, *x.shape[1:]), batch)

        def body(acc, chunk_i):
            chunk, i = chunk_i
            g, m = grad_fn(params, chunk, jax.random.fold_in(key, i), step)
            return jax.tree.map(jnp.add, acc, (g, m)), None

        zeros = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype),
            jax.eval_shape(grad_fn, params, jax.tree.map(lambda c: c[0], chunks), key, step),
        )
        total, _ = jax.lax.scan(body, zeros, (chunks, jnp.arange(microbatches)), unroll=bool(unroll))
        return jax.tree.map(lambda t: t / microbatches, total)

    return grads


def all_finite(tree) -> jax.Array:
    """True when every entry of `tree` is finite, from the sum of all entries: a NaN or an Inf
    anywhere makes the sum non-finite (Inf - Inf is NaN). One reduction per leaf, cheaper on
    XLA:CPU than an elementwise isfinite pass; finite gradients whose sum overflows float32
    (|sum| > 3e38) would also count as non-finite, which is where training has failed anyway."""
    return jnp.isfinite(sum(jnp.sum(leaf, dtype=jnp.float32) for leaf in jax.tree.leaves(tree)))


def make_train_step(
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    *,
    axis_name: str | None = None,
    num_shards: int = 1,
    microbatches: int = 1,
    unroll_microbatches: bool = False,
):
    """Returns the pure step(state, batch, base_key) -> (state, metrics).

    The step key is fold_in(base_key, state.step): the caller passes the same base key every call.
    The batch is data-parallel over devices, and device d's examples draw their noise from
    fold_in(step_key, d). Two equivalent forms:

    - `axis_name` set (under pmap or shard_map): `batch` is this device's share, d is
      `lax.axis_index(axis_name)`, and gradients and metrics are averaged over the axis with pmean;
    - otherwise `batch` is the global batch, viewed as `num_shards` equal shards (shard d = rows
      d*B/num_shards ...), the loss is the mean over shards, and under `jax.jit` with the batch
      split over a `num_shards`-device mesh each device computes its own shard.

    `microbatches` > 1 splits each device's share further (see accumulated_grads).
    """
    grad_fn = accumulated_grads(loss_fn, microbatches, unroll_microbatches)

    def loss_and_grads(params, batch, step_key, step):
        if axis_name is not None:
            key = jax.random.fold_in(step_key, jax.lax.axis_index(axis_name))
            grads, metrics = grad_fn(params, batch, key, step)
            return jax.lax.pmean(grads, axis_name), jax.lax.pmean(metrics, axis_name)
        if num_shards == 1:  # the same computation, without a size-1 vmap
            return grad_fn(params, batch, jax.random.fold_in(step_key, 0), step)
        shards = jax.tree.map(lambda x: x.reshape(num_shards, x.shape[0] // num_shards, *x.shape[1:]), batch)
        keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, jnp.arange(num_shards))
        if microbatches > 1:
            grads, metrics = jax.vmap(grad_fn, (None, 0, 0, None))(params, shards, keys, step)
            return jax.tree.map(lambda g: jnp.mean(g, axis=0), (grads, metrics))

        def mean_loss(params):
            losses, metrics = jax.vmap(loss_fn, (None, 0, 0, None))(params, shards, keys, step)
            return jnp.mean(losses), jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

        return jax.grad(mean_loss, has_aux=True)(params)

    def step(state: TrainState, batch: Batch, key: jax.Array):
        step_key = jax.random.fold_in(key, state.step)
        grads, metrics = loss_and_grads(state.params, batch, step_key, state.step)
        # A non-finite step reports zeros and nonfinite=1 (the update itself is skipped only when tx
        # is wrapped in optax.apply_if_finite, i.e. train.on_nonfinite=skip).
        finite = all_finite(grads)
        metrics = {name: jnp.where(finite, value, jnp.zeros_like(value)) for name, value in metrics.items()}
        metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def gather_batch(data: Batch, perm: jax.Array, index, batch_size: int) -> Batch:
    """Batch number `index` of the permutation `perm`, gathered on the device.

    perm [n]: rows of `data` [n, ...]. perm [S, n] (S data shards, `data` [S, n, ...]): `batch_size`
    rows from each shard, concatenated shard by shard into a global batch of S * batch_size.
    """
    idx = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size, axis=perm.ndim - 1)
    if perm.ndim == 1:
        return {name: array[idx] for name, array in data.items()}
    if perm.shape[0] == 1:  # one shard: a plain gather
        return {name: array[0][idx[0]] for name, array in data.items()}
    take = jax.vmap(lambda array, i: array[i])
    return {name: take(array, idx).reshape(-1, *array.shape[2:]) for name, array in data.items()}


def make_multi_step(step: Callable, batch_size: int, num_steps: int):
    """Returns run(state, data, perm, first, key) -> (state, summed metrics) for `num_steps` steps.

    Batches first .. first + num_steps - 1 of `perm` are gathered from the device-resident `data`
    inside the compiled function (see gather_batch; `batch_size` is per shard): no host round trip
    per step. num_steps > 1 fuses the steps with lax.scan; num_steps == 1 is a plain step (faster
    for convolutions on XLA:CPU).
    """

    def run(state, data, perm, first, key):
        if num_steps == 1:
            return step(state, gather_batch(data, perm, first, batch_size), key)

        def body(carry, i):
            state, sums = carry
            state, metrics = step(state, gather_batch(data, perm, first + i, batch_size), key)
            return (state, jax.tree.map(jnp.add, sums, metrics)), None

        zeros = jax.eval_shape(lambda s: step(s, gather_batch(data, perm, first, batch_size), key)[1], state)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
        (state, sums), _ = jax.lax.scan(body, (state, zeros), jnp.arange(num_steps))
        return state, sums

    return run


def epoch_permutation(key: jax.Array, epoch, num_examples: int, shard=0) -> jax.Array:
    """The example order of `epoch` within data shard `shard`, drawn on the device."""
    return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, epoch), shard), num_examples)


def make_eval_step(terms_fn: Callable):
    """Returns eval(params, batch, mask, key) -> sums of the per-example terms over unmasked examples."""

    def evaluate(params, batch, mask, key):
        terms = terms_fn(params, batch, key)
        sums = {name: jnp.sum(jnp.where(mask, value, 0.0)) for name, value in terms.items() if value.ndim == 1}
        sums["count"] = jnp.sum(mask.astype(jnp.float32))
        return sums

    return evaluate


def evaluate_dataset(
    eval_step: Callable, params, data: dict[str, np.ndarray], batch_size: int, key
) -> dict[str, float]:
    """Mean per-example terms over a whole split; the last batch is padded and masked, so one shape compiles."""
    n = len(next(iter(data.values())))
    batch_size = min(batch_size, n)
    totals = None
    for batch_index, start in enumerate(range(0, n, batch_size)):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        batch = {
            k: np.concatenate([v[start:stop], np.repeat(v[:1], pad, axis=0)]) if pad else v[start:stop]
            for k, v in data.items()
        }
        mask = np.arange(batch_size) < (stop - start)
        sums = eval_step(params, batch, mask, jax.random.fold_in(key, batch_index))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = float(totals.pop("count"))
    return {name: float(value) / count for name, value in totals.items()}
