"""The compiled, data-parallel training program of a run: placement, epoch orders, fused steps.

`make_program` turns the pure step of `cvae_jax.training.step` into the functions the epoch loop calls,
compiled for the run's `Layout` (sharded jit, pmap, or one device). Everything a call needs
(training data shards, state, permutations) already lives on the devices; a call runs `size`
steps and returns the new state and the summed metrics.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.config import ConfigError
from cvae_jax.training.parallel import AXIS, Layout
from cvae_jax.training.step import epoch_permutation, make_multi_step, make_train_step


@dataclasses.dataclass
class Program:
    """The compiled pieces of one run (see `make_program`)."""

    layout: Layout
    batch_per_shard: int
    examples_per_shard: int
    steps_per_epoch: int
    steps_per_call: int
    data: Any  # training data shards on the devices, e.g. {"image": [S, n, ...], "label": [S, n]}
    calls: dict[int, Callable]  # size -> (state, data, perms, first, key_data) -> (state, metric sums)
    permute: Callable  # (key_data, epoch) -> perms [S, n] on the devices

    def call_sizes(self, first: int = 0) -> list[tuple[int, int]]:
        """(first batch, steps) of each call of an epoch, from batch `first` on."""
        out = []
        while first < self.steps_per_epoch:
            size = min(self.steps_per_call, self.steps_per_epoch - first)
            out.append((first, size))
            first += size
        return out


def make_program(
    layout: Layout,
    loss_fn: Callable,
    tx,
    local_rows: dict[str, np.ndarray],
    global_batch: int,
    steps_per_call: Callable[[int], int],
    microbatches: int = 1,
    unroll_microbatches: bool = False,
) -> Program:
    """Compiles the training calls of a run.

    local_rows: this process's data shards [len(layout.local_shards), n, ...] (parallel.shard_rows), by
        name: whatever the loss reads from a batch ({"image", "label"}; {"tokens", "condition"}).
    steps_per_call: steps_per_epoch -> steps fused per call.
    """
    batch = global_batch // layout.num_shards
    if batch % microbatches:
        raise ConfigError(f"train.microbatches={microbatches} must divide each device's batch of {batch}")
    n = len(next(iter(local_rows.values()))[0])
    steps_per_epoch = n // batch
    k = steps_per_call(steps_per_epoch)
    build = _pmap_calls if layout.mode == "pmap" else _sharded_calls
    compile_call, permute = build(layout, loss_fn, tx, batch, n, microbatches, unroll_microbatches)
    return Program(
        layout=layout,
        batch_per_shard=batch,
        examples_per_shard=n,
        steps_per_epoch=steps_per_epoch,
        steps_per_call=k,
        data=layout.put_sharded(local_rows),
        calls={size: compile_call(size) for size in {k, steps_per_epoch % k} if size},
        permute=permute,
    )


def _keyed(step, batch: int, size: int):
    """`size` fused steps as one call that takes the base key as raw key data."""
    multi = make_multi_step(step, batch, size)

    def call(state, data, perm, first, key_data):
        return multi(state, data, perm, first, jax.random.wrap_key_data(key_data))

    return call


def _pmap_calls(layout, loss_fn, tx, batch, n, microbatches, unroll):
    """(size -> a pmapped call of `size` steps, the per-device epoch permutation) for pmap mode."""
    step = make_train_step(loss_fn, tx, axis_name=AXIS, microbatches=microbatches, unroll_microbatches=unroll)
    shard_ids = layout.put_sharded(np.asarray(layout.local_shards, np.int32))

    def compile_call(size):
        return jax.pmap(_keyed(step, batch, size), axis_name=AXIS, in_axes=(0, 0, 0, None, None), donate_argnums=0)

    perm_one = jax.pmap(
        lambda key_data, epoch, shard: epoch_permutation(jax.random.wrap_key_data(key_data), epoch, n, shard),
        axis_name=AXIS,
        in_axes=(None, None, 0),
    )

    def permute(key_data, epoch):
        return perm_one(key_data, epoch, shard_ids)

    return compile_call, permute


def _sharded_calls(layout, loss_fn, tx, batch, n, microbatches, unroll):
    """(size -> a jitted call of `size` steps over the sharded batch, the epoch permutation) for the
    sharded and single modes."""
    num_shards = layout.num_shards
    step = make_train_step(loss_fn, tx, num_shards=num_shards, microbatches=microbatches, unroll_microbatches=unroll)
    rep, sh = layout.replicated(), layout.sharded()

    def compile_call(size):
        shardings = {"in_shardings": (rep, sh, sh, rep, rep), "out_shardings": (rep, rep)}
        return jax.jit(_keyed(step, batch, size), donate_argnums=0, **shardings)

    def perms(key_data, epoch):
        key = jax.random.wrap_key_data(key_data)
        return jax.vmap(lambda s: epoch_permutation(key, epoch, n, s))(jnp.arange(num_shards))

    return compile_call, jax.jit(perms, in_shardings=(rep, rep), out_shardings=sh)
