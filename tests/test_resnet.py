"""The image models for colour data: the ResNet VAE (`--preset resnet`) and the hierarchical VAE
(`--preset hvae`). Each trains end to end from an npz of 8-bit colour images, reports bits/dim, writes
TensorBoard events, and remat changes memory, not the math."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.cli import main
from cvae_jax.config import ConfigError, apply_overrides, get_config, validate
from cvae_jax.core import objectives
from cvae_jax.core.models import build_model

SMALL = ["model.resnet_widths=8,16", "model.resnet_blocks=1", "model.latent_dim=8", "model.logistic_mixtures=3"]


def _colour_npz(path, n_train=96, n_test=32, size=16):
    """Colour images with structure to learn: a random colour per image, brighter towards one corner."""
    rng = np.random.default_rng(0)

    def images(n):
        ramp = np.linspace(0.3, 1.0, size)[None, :, None, None] * np.linspace(0.3, 1.0, size)[None, None, :, None]
        colour = rng.uniform(0.2, 1.0, size=(n, 1, 1, 3))
        return np.clip(255 * colour * ramp + rng.normal(0, 8, (n, size, size, 3)), 0, 255).astype(np.uint8)

    np.savez(
        path,
        x_train=images(n_train),
        y_train=rng.integers(0, 3, n_train),
        x_test=images(n_test),
        y_test=rng.integers(0, 3, n_test),
    )
    return path


@pytest.mark.slow  # two trainings through the command line
@pytest.mark.parametrize("preset", ["resnet", "hvae"])
def test_preset_trains_on_colour_npz_and_reports_bits_per_dim(tmp_path, preset):
    data = _colour_npz(tmp_path / "colour.npz")
    workdir = tmp_path / "run"
    args = ["train", "--preset", preset, "--epochs", "2", "--batch-size", "16", "--workdir", str(workdir)]
    args += ["--no-progress", "--set", "data.source=npz", "--set", f"data.path={data}"]
    for item in SMALL + (["model.hvae_groups=1", "model.hvae_latent_channels=4"] if preset == "hvae" else []):
        args += ["--set", item]
    assert main(args) == 0
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    tests = [line for line in lines if line["split"] == "test"]
    assert len(tests) == 3  # the untrained model, then two epochs
    for line in tests:  # bits/dim is the -ELBO per value in bits
        assert line["bits_per_dim"] == pytest.approx(line["neg_elbo"] / (16 * 16 * 3 * np.log(2)), rel=1e-5)
    assert tests[-1]["bits_per_dim"] < tests[0]["bits_per_dim"]  # it learns
    assert (workdir / "samples.png").stat().st_size > 0
    # TensorBoard: every number of the test lines as a scalar, and the final image grids
    scalars, images = _read_events(workdir)
    assert scalars["test/bits_per_dim"] == pytest.approx([line["bits_per_dim"] for line in tests], rel=1e-6)
    assert {"samples", "reconstructions"} <= images


def _read_events(folder):
    """The scalars ({tag: values by step}) and image tags of the TFRecord event files in `folder`, read
    record by record (uint64 length, uint32 CRC, the Event proto, uint32 CRC)."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars, images = {}, set()
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("image"):
                    images.add(value.tag)
                else:
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return {tag: [v for _, v in sorted(steps.items())] for tag, steps in scalars.items()}, images


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["resnet", "hvae"])
@pytest.mark.parametrize("kind", ["vae", "cvae"])
def test_remat_gives_the_same_loss_and_gradients(kind, preset):
    base = apply_overrides(get_config(kind, preset), SMALL)
    x = jnp.asarray(np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3)) / 255.0, jnp.float32)
    batch = {"image": x, "label": jnp.array([0, 1, 2, 1])}
    grads = []
    for remat in (False, True):
        cfg = validate(apply_overrides(base, [f"model.remat={remat}"]))
        model = build_model(cfg.model, (16, 16, 3), 3)
        condition = jax.nn.one_hot(batch["label"], 3) if kind == "cvae" else None
        params = model.init(jax.random.key(0), x, condition)
        terms, _ = objectives.make_objective(model, cfg.train, num_classes=3, binarize=False, total_steps=1)

        def loss(p):
            return jnp.mean(terms(p, batch, jax.random.key(2))["neg_elbo"])  # noqa: B023

        grads.append(jax.jit(jax.value_and_grad(loss))(params))  # compiled: op by op is slower
    (loss_a, grad_a), (loss_b, grad_b) = grads
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    assert jax.tree.structure(grad_a) == jax.tree.structure(grad_b)  # the same parameter names: checkpoints load
    for a, b in zip(jax.tree.leaves(grad_a), jax.tree.leaves(grad_b)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_resnet_bad_shapes_and_settings_are_clear_errors():
    cfg = validate(apply_overrides(get_config("vae", "resnet"), ["model.resnet_widths=8,16,32"]))
    with pytest.raises(ConfigError, match="divide by 4"):
        build_model(cfg.model, (30, 30, 3))
    with pytest.raises(ConfigError, match="remat"):
        validate(apply_overrides(get_config("vae"), ["model.remat=true"]))
    with pytest.raises(ConfigError, match="architecture"):
        validate(apply_overrides(get_config("vae"), ["model.architecture=transformer"]))


@pytest.mark.slow
def test_hvae_kl_is_a_sum_of_nonnegative_group_kls_and_samples_are_images():
    cfg = validate(apply_overrides(get_config("vae", "hvae"), SMALL + ["model.hvae_latent_channels=4"]))
    model = build_model(cfg.model, (16, 16, 3))
    x = jnp.asarray(np.random.default_rng(3).integers(0, 256, (5, 16, 16, 3)) / 255.0, jnp.float32)
    params = model.init(jax.random.key(0), x)
    recon, kl = model.apply(params, x, None, jax.random.key(1), method=model.elbo)
    assert recon.shape == kl.shape == (5,) and bool(jnp.all(kl >= 0)) and bool(jnp.all(jnp.isfinite(recon)))
    again = model.apply(params, x, None, jax.random.key(1), method=model.elbo)
    other = model.apply(params, x, None, jax.random.key(2), method=model.elbo)
    np.testing.assert_array_equal(recon, again[0])  # a function of (params, x, key)
    assert not np.array_equal(recon, other[0])  # the key draws the latents
    from cvae_jax.apps import inference

    drawn = inference.sample(model, params, jax.random.key(4), 6)
    assert drawn.shape == (6, 16, 16, 3) and float(drawn.min()) >= 0 and float(drawn.max()) <= 1
    with pytest.raises(ValueError, match="single-latent"):
        inference.encode(model, params, x)
    with pytest.raises(ConfigError, match="hierarchical prior"):
        validate(apply_overrides(get_config("vae", "hvae"), ["model.prior=mixture"]))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["resnet", "hvae"])
def test_bfloat16_compute_keeps_float32_parameters_and_loss_close_to_float32(preset):
    x = jnp.asarray(np.random.default_rng(5).integers(0, 256, (4, 16, 16, 3)) / 255.0, jnp.float32)
    batch, losses = {"image": x, "label": jnp.zeros(4, jnp.int32)}, {}
    for dtype in ("float32", "bfloat16"):
        cfg = validate(apply_overrides(get_config("vae", preset), SMALL + [f"model.compute_dtype={dtype}"]))
        model = build_model(cfg.model, (16, 16, 3))
        params = model.init(jax.random.key(0), x)  # the same initial values: parameters stay float32
        assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype("float32")}
        terms, _ = objectives.make_objective(model, cfg.train, num_classes=1, binarize=False, total_steps=1)
        losses[dtype] = terms(params, batch, jax.random.key(1))["neg_elbo"]
        assert losses[dtype].dtype == jnp.float32
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)


def test_upsample2_is_nearest_neighbour_resizing_and_its_gradient_sums_blocks():
    from cvae_jax.nn import layers

    x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
    np.testing.assert_array_equal(layers.upsample2(x), jax.image.resize(x, (2, 6, 10, 4), "nearest"))
    w = jax.random.normal(jax.random.key(1), (2, 6, 10, 4))
    grad = jax.grad(lambda v: jnp.sum(layers.upsample2(v) * w))(x)
    np.testing.assert_allclose(grad, w.reshape(2, 3, 2, 5, 2, 4).sum(axis=(2, 4)), rtol=1e-6)
