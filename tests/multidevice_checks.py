"""Checks that need several devices; tests/test_parallel.py runs this file in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 and reads one JSON object from its stdout.

    python tests/multidevice_checks.py step   # one/three steps: 1 device vs 8 sharded vs 8 pmap
    python tests/multidevice_checks.py run    # whole runs: sharded vs pmap vs repeat, 1-device modes
    python tests/multidevice_checks.py molecules <workdir>  # the molecule CVAE: the same, and a resume
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import images as data
from cvae_jax.tasks.images import build, init_for, train_and_evaluate
from cvae_jax.training import parallel
from cvae_jax.training.step import make_train_step

SMALL = ["model.latent_dim=4", "model.encoder_hidden=64", "model.decoder_hidden=64", "train.learning_rate=3e-3"]


def max_diff(a, b) -> float:
    a, b = jax.device_get((a, b))
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def small_digits(n_train: int, n_test: int) -> data.Dataset:
    d = data.load_npz(data.embedded_path())
    return data.Dataset(
        train=data.Split(d.train.images[:n_train], d.train.labels[:n_train]),
        test=data.Split(d.test.images[:n_test], d.test.labels[:n_test]),
        num_classes=10,
        name="digits",
    )


def step_checks() -> dict:
    assert jax.device_count() == 8, jax.devices()
    cfg = apply_overrides(get_config("cvae"), SMALL + ["train.objective=hybrid"])
    digits = small_digits(64, 8)
    parts = build(cfg, digits.image_shape, digits.num_classes)
    state0 = init_for(parts, cfg, digits.image_shape, digits.num_classes)
    key = jax.random.key(42)
    batches = [
        {
            "image": jnp.asarray(digits.train.images[i * 32 : (i + 1) * 32]),
            "label": jnp.asarray(digits.train.labels[i * 32 : (i + 1) * 32]),
        }
        for i in range(2)
    ]

    def run(step_fn, state, batches):
        out = []
        for b in batches:
            state, m = step_fn(state, b, key)
            out.append(m)
        return state, out

    # 1 device: the global batch of 32 seen as 8 shards with the per-shard noise of 8 devices.
    one = jax.jit(make_train_step(parts.loss, parts.tx, num_shards=8))
    one_dev = jax.devices()[0]
    s1, m1 = run(one, jax.device_put(state0, one_dev), [jax.device_put(b, one_dev) for b in batches])

    # 8 devices, sharded jit: batch split over the mesh, state replicated.
    mesh = Mesh(np.array(jax.devices()), (parallel.AXIS,))
    rep, sh = NamedSharding(mesh, P()), NamedSharding(mesh, P(parallel.AXIS))
    sharded = jax.jit(
        make_train_step(parts.loss, parts.tx, num_shards=8), in_shardings=(rep, sh, rep), out_shardings=(rep, rep)
    )
    s8, m8 = run(sharded, jax.device_put(state0, rep), [jax.device_put(b, sh) for b in batches])
    sharded_inputs_split = len(jax.device_put(batches[0], sh)["image"].addressable_shards) == 8

    # 8 devices, pmap: each device gets 4 rows; the state carries a leading device axis.
    pm = jax.pmap(
        make_train_step(parts.loss, parts.tx, axis_name=parallel.AXIS), axis_name=parallel.AXIS, in_axes=(0, 0, None)
    )
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (8, *x.shape)), state0)
    sp, mp = run(pm, stacked, [jax.tree.map(lambda x: x.reshape(8, 4, *x.shape[1:]), b) for b in batches])
    sp0 = jax.tree.map(lambda x: x[0], sp)
    pmap_replicas_agree = max_diff(jax.tree.map(lambda x: x[0], sp.params), jax.tree.map(lambda x: x[7], sp.params))

    # The same step with one noise for the whole batch (num_shards=1) differs: the shard noise matters.
    s_shared, _ = run(jax.jit(make_train_step(parts.loss, parts.tx, num_shards=1)), state0, batches)

    return {
        "one_vs_sharded": max_diff(s1.params, s8.params),
        "one_vs_pmap": max_diff(s1.params, sp0.params),
        "sharded_vs_pmap": max_diff(s8.params, sp0.params),
        "metrics_one_vs_sharded": max(abs(float(m1[i][k]) - float(m8[i][k])) for i in range(2) for k in m1[i]),
        "metrics_one_vs_pmap": max(abs(float(m1[i][k]) - float(mp[i][k][0])) for i in range(2) for k in m1[i]),
        "pmap_replicas": pmap_replicas_agree,
        "shared_noise_vs_sharded": max_diff(s_shared.params, s8.params),
        "update_size": max_diff(state0.params, s8.params),
        "steps": [int(s1.step), int(s8.step), int(sp0.step)],
        "sharded_inputs_split": sharded_inputs_split,
    }


def run_checks() -> dict:
    digits = small_digits(512, 100)
    base = SMALL + ["train.epochs=2", "train.batch_size=64", "train.eval_batch_size=100"]

    def train(*extra):
        run = train_and_evaluate(
            apply_overrides(get_config("cvae"), base + list(extra)), dataset=digits, progress=False
        )
        return run.state.params, [e["neg_elbo"] for e in run.history]

    p_sharded, h_sharded = train("parallel.mode=sharded")
    p_again, h_again = train("parallel.mode=sharded")
    p_pmap, h_pmap = train("parallel.mode=pmap")
    p_one, h_one = train("parallel.mode=single")
    p_one_sharded, h_one_sharded = train("parallel.mode=sharded", "parallel.num_devices=1")
    p_per_device, _ = train("parallel.per_device_batch_size=8")  # 8 x 8 devices = the same global batch of 64
    conv_one_step = ("model.encoder_conv=8", "model.decoder_conv=8", "train.steps_per_call=1")
    p_conv_sharded, h_conv_sharded = train(*conv_one_step)
    p_conv_pmap, h_conv_pmap = train(*conv_one_step, "parallel.mode=pmap")
    p_conv_fused, _ = train(*conv_one_step[:2])  # auto steps_per_call: each epoch in one sharded lax.scan
    errors = {}
    for name, extra in {"indivisible": ["train.batch_size=60"], "too_many": ["parallel.num_devices=16"]}.items():
        try:
            train(*extra)
            errors[name] = None
        except Exception as e:  # noqa: BLE001 - the message is what the test checks
            errors[name] = f"{type(e).__name__}: {e}"
    return {
        "sharded_repeat": max_diff(p_sharded, p_again),
        "history_repeat_equal": h_sharded == h_again,
        "sharded_vs_pmap": max_diff(p_sharded, p_pmap),
        "history_sharded_vs_pmap": max(abs(a - b) for a, b in zip(h_sharded, h_pmap)),
        "single_vs_sharded_1": max_diff(p_one, p_one_sharded),
        "history_single_equal": h_one == h_one_sharded,
        "eight_vs_one_device": max_diff(p_sharded, p_one),
        "per_device_vs_global": max_diff(p_sharded, p_per_device),
        "conv_sharded_vs_pmap": max_diff(p_conv_sharded, p_conv_pmap),
        "history_conv_sharded_vs_pmap": max(abs(a - b) for a, b in zip(h_conv_sharded, h_conv_pmap)),
        "conv_fused_vs_one_step": max_diff(p_conv_fused, p_conv_sharded),
        "test_neg_elbo": [h_sharded[0], h_sharded[-1]],
        "errors": errors,
    }


def molecule_checks(workdir: str) -> dict:
    from cvae_jax import molecules
    from cvae_jax.config import ParallelConfig, TrainConfig

    fixtures = Path(__file__).resolve().parent / "data"
    base = molecules.recipe(
        str(fixtures / "moses_train_1200.csv.gz"),
        str(fixtures / "moses_test_400.csv.gz"),
        num_train=512,
        num_test=64,
        latent_dim=4,
        embed_dim=8,
        encoder_hidden=16,
        decoder_hidden=16,
        train=TrainConfig(epochs=2, batch_size=64, eval_batch_size=64, learning_rate=3e-3),
    )
    mol = molecules.prepare(base)

    def train(workdir=None, **parallel_fields):
        cfg = dataclasses.replace(base, parallel=ParallelConfig(**parallel_fields))
        _, state, history = molecules.train(cfg, mol, workdir=workdir)
        return state.params, [h["neg_elbo"] for h in history if h["split"] == "test"]

    p_sharded, h_sharded = train(workdir)
    p_pmap, h_pmap = train(mode="pmap")
    p_one, h_one = train(mode="single")
    p_one_sharded, h_one_sharded = train(num_devices=1)
    run = Path(workdir)
    steps = sorted((p for p in (run / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.rmtree(steps[-1])  # as if the process had died during the last epoch
    p_resumed, h_resumed = train(workdir)
    _, p_loaded, _ = molecules.load(run, "latest")
    errors = {}
    try:
        train(num_devices=16)
    except Exception as e:  # noqa: BLE001 - the message is what the test checks
        errors["too_many"] = f"{type(e).__name__}: {e}"
    return {
        "checkpoint_steps": [int(p.name) for p in steps],
        "sharded_vs_pmap": max_diff(p_sharded, p_pmap),
        "history_sharded_vs_pmap": max(abs(a - b) for a, b in zip(h_sharded, h_pmap)),
        "single_vs_sharded_1": max_diff(p_one, p_one_sharded),
        "history_single_equal": h_one == h_one_sharded,
        "eight_vs_one_device": max_diff(p_sharded, p_one),
        "resumed_vs_straight": max_diff(p_sharded, p_resumed),
        "history_resumed_equal": h_resumed == h_sharded,
        "loaded_vs_trained": max_diff(p_sharded, p_loaded),
        "test_neg_elbo": [h_sharded[0], h_sharded[-1]],
        "errors": errors,
    }


def image_checks() -> dict:
    """The colour-image models: two steps on 1 device (the batch seen as 4 shards, with 4 devices'
    noise) against the same steps sharded over 4 devices."""
    out = {}
    rng = np.random.default_rng(0)
    batches = [
        {"image": jnp.asarray(rng.integers(0, 256, (8, 16, 16, 3)) / 255.0, jnp.float32), "label": jnp.zeros(8, int)}
        for _ in range(2)
    ]
    small = ["model.resnet_widths=8,16", "model.resnet_blocks=1", "model.latent_dim=4", "model.logistic_mixtures=2"]
    for preset in ("resnet", "hvae"):
        cfg = apply_overrides(get_config("vae", preset), small + ["model.hvae_latent_channels=2"])
        parts = build(cfg, (16, 16, 3), 10)
        state0 = init_for(parts, cfg, (16, 16, 3), 10)
        key = jax.random.key(7)
        step = make_train_step(parts.loss, parts.tx, num_shards=4)
        one = jax.jit(step)
        mesh = Mesh(np.array(jax.devices()[:4]), (parallel.AXIS,))
        rep, sh = NamedSharding(mesh, P()), NamedSharding(mesh, P(parallel.AXIS))
        sharded = jax.jit(step, in_shardings=(rep, sh, rep), out_shardings=(rep, rep))
        s1, s4 = state0, jax.device_put(state0, rep)
        for b in batches:
            s1, m1 = one(s1, b, key)
            s4, m4 = sharded(s4, jax.device_put(b, sh), key)
        out[preset] = {
            "one_vs_four": max_diff(s1.params, s4.params),
            "loss_one_vs_four": abs(float(m1["loss"]) - float(m4["loss"])),
            "update_size": max_diff(state0.params, s4.params),
            "split": len(jax.device_put(batches[0], sh)["image"].addressable_shards) == 4,
        }
    return out


# The compared models whose estimators reach across the batch, each small: the aggregate posterior
# (beta-TCVAE), the critic's permutation (FactorVAE), the batch covariance (DIP-VAE), MMD (WAE; InfoVAE
# adds a KL to the same estimator) and the codebook's moving averages (VQ-VAE). Per-example objectives
# and posteriors (MIWAE, IAF, full covariance) run per shard like the plain ELBO of the "step" check.
MODELS = {
    "beta_tcvae": ["train.objective=beta_tcvae", "train.beta=4"],
    "factor_vae": ["train.objective=factor_vae", "train.critic_hidden=16,16"],
    "dip_vae_ii": ["train.objective=dip_vae_ii"],
    "wae": ["train.objective=wae"],
    "vqvae": ["model.architecture=vqvae", "model.codebook_size=16", "model.vq_widths=8,16"],
}


def model_checks() -> dict:
    """Each of MODELS: two steps on 1 device (the batch seen as 4 shards, with 4 devices' noise) against
    the same steps sharded over 4 devices."""
    digits = small_digits(64, 8)
    batches = [
        {
            "image": jnp.asarray(digits.train.images[i * 32 : (i + 1) * 32]),
            "label": jnp.asarray(digits.train.labels[i * 32 : (i + 1) * 32]),
        }
        for i in range(2)
    ]
    mesh = Mesh(np.array(jax.devices()[:4]), (parallel.AXIS,))
    rep, sh = NamedSharding(mesh, P()), NamedSharding(mesh, P(parallel.AXIS))
    out = {}
    for name, overrides in MODELS.items():
        cfg = apply_overrides(get_config("vae"), SMALL + overrides)
        parts = build(cfg, digits.image_shape, digits.num_classes, total_steps=100)
        state0 = init_for(parts, cfg, digits.image_shape, digits.num_classes)
        step = make_train_step(parts.loss, parts.tx, num_shards=4)
        one = jax.jit(step)
        sharded = jax.jit(step, in_shardings=(rep, sh, rep), out_shardings=(rep, rep))
        s1, s4 = state0, jax.device_put(state0, rep)
        for b in batches:
            s1, m1 = one(s1, b, jax.random.key(3))
            s4, m4 = sharded(s4, jax.device_put(b, sh), jax.random.key(3))
        out[name] = {
            "one_vs_four": max_diff(s1.params, s4.params),
            "loss_one_vs_four": abs(float(m1["loss"]) - float(m4["loss"])),
            "update_size": max_diff(state0.params, s4.params),
        }
    return out


if __name__ == "__main__":
    checks = {"step": step_checks, "run": run_checks, "molecules": molecule_checks, "images": image_checks}
    checks["models"] = model_checks
    print(json.dumps(checks[sys.argv[1]](*sys.argv[2:])))
