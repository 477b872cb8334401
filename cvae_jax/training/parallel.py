"""Data parallelism over devices and hosts: JAX's distributed runtime, a 1-D device mesh, placement.

The training set is split into one shard per device (after a fixed, seeded shuffle); every step
each device takes `global_batch / devices` examples from its own shard, and device d draws its
noise from `fold_in(step_key, d)`. So a run depends on (config, seed, device count) and not on the
mode that executes it:

- ``sharded`` (default): `jax.jit` over a mesh with one axis, ``"data"``. Data and batch are split
  over it, parameters and optimizer state are replicated; XLA inserts the gradient all-reduce.
- ``pmap``: `jax.pmap` of the same step with ``axis_name="data"``; gradients and metrics are
  averaged with `lax.pmean`. State carries a leading device axis.
- ``single``: one device (the mesh has size 1).

Several processes (hosts) run the same program; each holds only its own devices' data shards.
Only process 0 writes logs and pictures; checkpoints are written jointly through Orbax.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cvae_jax.config import ConfigError, ParallelConfig

AXIS = "data"


def initialize(cfg: ParallelConfig) -> bool:
    """Starts `jax.distributed` if `cfg` or the environment asks for several processes.

    Call it before anything else touches JAX devices. Returns True when running multi-process.
    Environment: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES, JAX_PROCESS_ID.
    """
    if cfg.distributed == "off":
        return False
    if jax.distributed.is_initialized():
        return True
    address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if cfg.distributed == "auto" and not address:
        return False
    num = cfg.num_processes or _env_int("JAX_NUM_PROCESSES")
    pid = cfg.process_id if cfg.process_id >= 0 else _env_int("JAX_PROCESS_ID", -1)
    kwargs: dict[str, Any] = {}
    if address:
        kwargs["coordinator_address"] = address
    if num:
        kwargs["num_processes"] = num
    if pid >= 0:
        kwargs["process_id"] = pid
    if num and pid >= num:
        raise ConfigError(f"parallel.process_id={pid} must be below parallel.num_processes={num}")
    jax.distributed.initialize(**kwargs)
    return True


def _env_int(name: str, default: int = 0) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} must be an integer") from None


def is_primary() -> bool:
    """True in the process that writes logs, pictures and metrics (process 0)."""
    return jax.process_index() == 0


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a run's arrays live: the mode and a 1-D mesh over the devices it uses (all processes)."""

    mode: str
    mesh: Mesh

    @property
    def num_shards(self) -> int:
        return self.mesh.size

    @property
    def local_shards(self) -> list[int]:
        """Mesh positions of this process's devices: the data shards this process holds."""
        me = jax.process_index()
        return [i for i, d in enumerate(self.mesh.devices.flat) if d.process_index == me]

    def sharded(self) -> NamedSharding:
        return NamedSharding(self.mesh, P(AXIS))

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def put_sharded(self, local: Any) -> Any:
        """This process's rows, one per local shard (leading axis), placed on their devices.

        Sharded mode: one global array over the whole mesh. pmap mode: a host-local array over this
        process's devices (pmap itself joins the processes' arrays)."""
        if self.mode == "pmap":
            mine = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
            sharding = NamedSharding(Mesh(np.array(mine), (AXIS,)), P(AXIS))
            return jax.tree.map(lambda x: jax.device_put(np.asarray(x), sharding), local)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.sharded(), np.asarray(x)), local)

    def put_replicated(self, tree: Any) -> Any:
        """The same value on every device: replicated (sharded mode) or stacked per device (pmap)."""
        if self.mode == "pmap":
            n = len(self.local_shards)
            return self.put_sharded(jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree))
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.replicated(), np.asarray(x)), tree)

    def global_value(self, tree: Any) -> Any:
        """A state as global arrays replicated over the mesh, the form every process saves jointly."""
        if self.mode == "pmap":
            local = jax.device_get(self.local_value(tree))
            return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.replicated(), x), local)
        return tree

    def from_global(self, tree: Any) -> Any:
        """The inverse of global_value: a replicated global state in this layout's form."""
        if self.mode == "pmap":
            return self.put_replicated(jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree))
        return tree

    def local_value(self, tree: Any) -> Any:
        """This process's copy of a replicated (or, in pmap mode, per-device stacked) tree, on one device."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x.addressable_data(0)[0], tree)
        return jax.tree.map(lambda x: x.addressable_data(0), tree)


def make_layout(cfg: ParallelConfig) -> Layout:
    """The mesh of `cfg`: all (or cfg.num_devices) local devices of every process, process by process."""
    local = jax.local_device_count()
    want = 1 if cfg.mode == "single" else (cfg.num_devices or local)
    if want > local:
        raise ConfigError(
            f"parallel.num_devices={want} but this process sees only {local} {jax.default_backend()} "
            f"device(s) ({jax.local_devices()}); use --devices {local} or fewer"
        )
    if jax.process_count() > 1 and want != local:
        raise ConfigError(
            f"with {jax.process_count()} processes every process must use all its {local} devices; "
            f"drop parallel.num_devices (got {want}) or set parallel.mode=sharded"
        )
    by_process: dict[int, list] = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    devices = [d for p in sorted(by_process) for d in by_process[p][:want]]
    return Layout(mode=cfg.mode, mesh=Mesh(np.array(devices), (AXIS,)))


def global_batch_size(batch_size: int, cfg: ParallelConfig, num_shards: int) -> int:
    """The global batch: train.batch_size, or per_device_batch_size x devices; must split evenly."""
    if cfg.per_device_batch_size:
        return cfg.per_device_batch_size * num_shards
    if batch_size % num_shards:
        lower = batch_size - batch_size % num_shards
        raise ConfigError(
            f"train.batch_size={batch_size} does not divide by the {num_shards} devices; use a multiple "
            f"of {num_shards} (e.g. {lower or num_shards} or {lower + num_shards}), set "
            f"--per-device-batch-size, or choose the device count with --devices"
        )
    return batch_size


def shard_rows(arrays: dict[str, np.ndarray], num_shards: int, shards: list[int], seed: int) -> dict[str, np.ndarray]:
    """Rows of this process's shards: [len(shards), n // num_shards, ...] after a seeded shuffle.

    The shuffle (fixed by `seed`) keeps shards alike even when the file is sorted by label; the last
    n % num_shards examples of the shuffled order are left out.
    """
    n = len(next(iter(arrays.values())))
    per = n // num_shards
    order = np.random.default_rng(seed).permutation(n)
    picks = np.stack([order[s * per : (s + 1) * per] for s in shards])
    return {name: np.asarray(value)[picks] for name, value in arrays.items()}
