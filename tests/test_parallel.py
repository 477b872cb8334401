"""Data parallelism: 8 virtual CPU devices (a subprocess with XLA_FLAGS) and two real processes on
localhost with JAX's CPU collectives. Each multi-device result is checked against one device, or one
process, computing the same global batch with the same per-device noise."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvae_jax.config import ConfigError, ParallelConfig, apply_overrides, get_config
from cvae_jax.training import parallel

pytestmark = pytest.mark.slow  # multi-device subprocesses

HERE = Path(__file__).parent
# The session's XLA flags (conftest.py's), less any device count: each subprocess sets its own. Eight
# virtual devices share two cores with another test worker: a device thread can wait more than XLA's
# default 40 s at a collective's rendezvous, which then aborts a correct run; give it ten minutes.
XLA_FLAGS = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    + ["--xla_cpu_collective_call_terminate_timeout_seconds=600", "--xla_cpu_collective_timeout_seconds=600"]
)


def _python(args: list[str], devices: int, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        XLA_FLAGS=f"{XLA_FLAGS} --xla_force_host_platform_device_count={devices}".strip(),
        JAX_PLATFORMS="cpu",
    )
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _checks(which: str, *args: str) -> dict:
    proc = _python([str(HERE / "multidevice_checks.py"), which, *args], devices=8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_one_step_on_8_devices_equals_1_device_and_pmap():
    r = _checks("step")
    assert r["sharded_inputs_split"]  # the batch really was split over 8 devices
    assert r["steps"] == [2, 2, 2]
    assert r["update_size"] > 1e-3  # the steps moved the parameters ...
    for name in ("one_vs_sharded", "one_vs_pmap", "sharded_vs_pmap"):
        assert r[name] < 1e-6, (name, r)  # ... identically on 1 device, sharded jit and pmap
    assert r["metrics_one_vs_sharded"] < 1e-3 and r["metrics_one_vs_pmap"] < 1e-3  # losses ~500 nats
    assert r["pmap_replicas"] == 0.0
    # Per-device noise is real: one noise for the whole batch gives a different update.
    assert r["shared_noise_vs_sharded"] > 1e-4


def test_whole_runs_agree_across_modes_and_repeat_exactly():
    r = _checks("run")
    assert r["sharded_repeat"] == 0.0 and r["history_repeat_equal"]  # reproducible for a fixed device count
    assert r["sharded_vs_pmap"] < 1e-5 and r["history_sharded_vs_pmap"] < 1e-2
    # A conv model, one step per call, too. Its tuned conv gradients sum in another order under the
    # sharded vmap than per pmap device; on some CPUs (an AVX-512 EPYC) that rounding flips the sign of
    # near-zero gradients, which Adam turns into updates of up to lr: parameters stay within a few
    # such steps (lr = 1e-3) and the test ELBO within 0.01 nats.
    assert r["conv_sharded_vs_pmap"] < 1e-2 and r["history_conv_sharded_vs_pmap"] < 1e-2
    assert r["conv_fused_vs_one_step"] < 1e-5  # and its fused epochs (CPU conv gradients in a sharded scan)
    assert r["single_vs_sharded_1"] == 0.0 and r["history_single_equal"]
    assert r["per_device_vs_global"] == 0.0  # 8 per device x 8 devices is the global batch 64
    assert r["eight_vs_one_device"] > 1e-4  # other device count, other shards and noise: other numbers
    start, end = r["test_neg_elbo"]
    assert end < 0.7 * start  # it trained
    assert "batch_size=60 does not divide by the 8 devices" in r["errors"]["indivisible"]
    assert "num_devices=16" in r["errors"]["too_many"] and "8 cpu device" in r["errors"]["too_many"]


def test_colour_image_models_sharded_over_4_devices_match_one_device():
    r = _checks("images")
    for preset, checks in r.items():
        assert checks["split"] and checks["update_size"] > 1e-4, (preset, checks)  # real, split steps
        # The loss (~4,000 nats per image in float32) to its last bits. The parameters after two Adam
        # steps (lr 1e-3, so update_size ~2e-3): the 4 shards sum the gradients in another order, and
        # where a gradient is near Adam's eps (1e-8) that rounding moves its update by a fraction of a
        # step; the CPUs met so far differ by 0 (AVX-512 EPYC) to 1.65e-5 (AVX2 EPYC). A wrong split
        # (other data or noise per shard) moves parameters by whole steps (~1e-3), so the bound is a
        # tenth of one step.
        assert checks["one_vs_four"] < 1e-4 and checks["loss_one_vs_four"] < 1e-2, (preset, checks)


def test_the_molecule_cvae_trains_data_parallel_and_resumes_exactly(tmp_path):
    """8 devices, 512 molecules, batch 64 (8 per device), 2 epochs of 8 steps: sharded jit and pmap
    agree, one device gives other numbers, and a run resumed on 8 devices is the run that never
    stopped; its checkpoint loads on one device."""
    pytest.importorskip("rdkit", reason="needs RDKit, the [chem] extra: pip install -e '.[chem]'")
    r = _checks("molecules", str(tmp_path / "run"))
    assert r["checkpoint_steps"] == [8, 16]
    assert r["sharded_vs_pmap"] < 1e-5 and r["history_sharded_vs_pmap"] < 1e-2
    assert r["single_vs_sharded_1"] == 0.0 and r["history_single_equal"]
    assert r["eight_vs_one_device"] > 1e-4
    assert r["resumed_vs_straight"] == 0.0 and r["history_resumed_equal"]
    assert r["loaded_vs_trained"] == 0.0
    start, end = r["test_neg_elbo"]
    assert end < 0.9 * start  # it trained
    assert "num_devices=16" in r["errors"]["too_many"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["sharded", "pmap"])
def test_two_processes_on_localhost_train_like_one_process_with_as_many_devices(tmp_path, mode):
    port, worker = str(_free_port()), str(HERE / "multihost_worker.py")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = XLA_FLAGS  # each process sets its own device count
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(i), "2", port, str(tmp_path / "run"), str(tmp_path / f"p{i}.npz"), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    ref = _python([worker, "0", "1", "0", "-", str(tmp_path / "ref.npz"), mode], devices=4)
    assert ref.returncode == 0, ref.stderr[-3000:]

    a, b, one = (np.load(tmp_path / f"{n}.npz") for n in ("p0", "p1", "ref"))
    assert int(a["processes"]) == 2 and int(a["devices"]) == 4 and int(one["processes"]) == 1
    names = [k for k in a.files if k not in ("devices", "processes", "neg_elbo")]
    assert names and all(np.array_equal(a[k], b[k]) for k in names)  # both processes hold the same model
    assert max(float(np.abs(a[k] - one[k]).max()) for k in names) < 1e-4  # = 1 process with 4 devices
    np.testing.assert_allclose(a["neg_elbo"], one["neg_elbo"], rtol=1e-5)
    assert a["neg_elbo"][-1] < 0.7 * a["neg_elbo"][0]
    # Only process 0 wrote the log: 1 + 2 epochs x (train, test) lines + 1 checkpoint line, not twice as many.
    splits = [json.loads(line)["split"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert splits == ["validation", "test", "train", "validation", "test", "train", "validation", "test", "checkpoint"]
    assert (tmp_path / "run" / "samples.png").exists()


def test_global_batch_size_rules():
    assert parallel.global_batch_size(128, ParallelConfig(), 8) == 128
    assert parallel.global_batch_size(128, ParallelConfig(per_device_batch_size=32), 8) == 256
    with pytest.raises(ConfigError, match=r"batch_size=100 does not divide by the 8 devices.*96 or 104"):
        parallel.global_batch_size(100, ParallelConfig(), 8)


def test_shard_rows_are_disjoint_equal_and_seeded():
    arrays = {"image": np.arange(103.0)[:, None], "label": np.arange(103)}
    rows = parallel.shard_rows(arrays, 4, [0, 1, 2, 3], seed=5)
    assert rows["image"].shape == (4, 25, 1) and rows["label"].shape == (4, 25)
    labels = rows["label"].ravel()
    assert len(set(labels)) == 100  # disjoint; 103 % 4 = 3 examples left out
    np.testing.assert_array_equal(rows["image"][..., 0], rows["label"])  # image and label stay paired
    again = parallel.shard_rows(arrays, 4, [2, 3], seed=5)  # a process holding shards 2 and 3
    np.testing.assert_array_equal(again["label"], rows["label"][2:])


@pytest.mark.parametrize(
    "override, message",
    [
        ("parallel.mode=data", "parallel.mode must be one of"),
        ("parallel.num_devices=-1", "parallel.num_devices must be >= 0"),
        ("parallel.per_device_batch_size=-4", "parallel.per_device_batch_size must be >= 0"),
        ("parallel.distributed=maybe", "parallel.distributed must be one of"),
    ],
)
def test_bad_parallel_config_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_config(), [override])


def test_more_devices_than_present_is_a_clear_error():
    with pytest.raises(ConfigError, match="parallel.num_devices=4 but this process sees only 1"):
        parallel.make_layout(ParallelConfig(num_devices=4))


def test_the_compared_models_sharded_over_4_devices_match_one_device():
    """β-TCVAE, FactorVAE (its discriminator and optimizer too), DIP-VAE, WAE's MMD and VQ-VAE (its
    codebook averages too): their batch estimators run per device shard, as on one device."""
    r = _checks("models")
    for name, checks in r.items():
        assert checks["update_size"] > 1e-4, name  # the steps moved the parameters ...
        # ... as on one device (Adam's first steps turn rounding in near-zero gradients into up to
        # lr-sized moves on some CPUs; a shard-crossing estimator moves many parameters by ~lr = 3e-3)
        assert checks["one_vs_four"] < 1e-4, (name, checks)
        assert checks["loss_one_vs_four"] < 1e-3, (name, checks)
