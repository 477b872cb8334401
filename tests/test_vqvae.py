"""VQ-VAE against its definition (van den Oord et al. 2017): nearest codes, the codebook's moving
averages (appendix A.1) applied by the one train step, usage statistics; and its second stage, an
autoregressive prior over the codes, trained as a task."""

import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvae_jax.cli import main
from cvae_jax.config import ConfigError, apply_overrides, get_config
from cvae_jax.core import vqvae
from cvae_jax.tasks.images import build, init_for, train_and_evaluate

SMALL = ["model.architecture=vqvae", "model.latent_dim=4", "model.codebook_size=16", "model.vq_widths=8,16"]


@pytest.fixture(scope="module")
def parts(small_digits):
    cfg = apply_overrides(get_config("vae"), [*SMALL, "model.codebook_decay=0.9"])
    built = build(cfg, small_digits.image_shape, small_digits.num_classes)
    state = init_for(built, cfg, small_digits.image_shape, small_digits.num_classes)
    batch = {"image": jnp.asarray(small_digits.train.images[:32]), "label": jnp.asarray(small_digits.train.labels[:32])}
    return built, state, batch


def test_codes_are_the_nearest_codebook_vectors(parts):
    built, state, batch = parts
    model, params = built.model, state.params
    z_e = np.asarray(model.apply(params, batch["image"], method=model.encode_grid), np.float64)
    codes = np.asarray(model.apply(params, jnp.asarray(z_e, jnp.float32), method=model.nearest))
    book = np.asarray(model.apply(params, method=model.codebook), np.float64)
    brute = np.argmin(((z_e[..., None, :] - book) ** 2).sum(-1), -1)
    assert codes.shape == (32, 7, 7) and np.array_equal(codes, brute)


def test_one_train_step_moves_the_codebook_to_its_moving_averages(parts):
    """N <- g N + (1 - g) n, m <- g m + (1 - g) sum of the encoder outputs per code, through the
    optimizer's codebook branch; codes whose average count falls below 1 restart at an encoder output."""
    built, state, batch = parts
    model, params = built.model, state.params
    key = jax.random.key(4)
    grads = jax.jit(jax.grad(lambda p: built.loss(p, batch, key)[0]))(params)  # compiled: op by op is slower
    updates, _ = jax.jit(built.tx.update)(grads, state.opt_state, params)
    new = optax.apply_updates(params, updates)["codebook"]
    z_e = np.asarray(model.apply(params, batch["image"], method=model.encode_grid), np.float64).reshape(-1, 4)
    codes = np.asarray(
        model.apply(params, model.apply(params, batch["image"], method=model.encode_grid), method=model.nearest)
    ).reshape(-1)
    old_n, old_m = (np.asarray(params["codebook"][k], np.float64) for k in ("counts", "sums"))
    n = 0.9 * old_n + 0.1 * np.bincount(codes, minlength=16)
    m = 0.9 * old_m + 0.1 * np.stack([z_e[codes == k].sum(0) for k in range(16)])
    alive = n >= vqvae.RESTART_BELOW
    assert alive.any() and (~alive).any()  # both kinds occur in this step
    np.testing.assert_allclose(np.asarray(new["counts"])[alive], n[alive], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new["sums"])[alive], m[alive], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(new["counts"])[~alive], 1.0)
    for row in np.asarray(new["sums"])[~alive]:  # a restarted code sits at one of the batch's encoder outputs
        assert np.min(np.abs(z_e - row).max(1)) < 1e-5
    # and the network's parameters moved by Adam, the codebook by nothing else
    assert float(jnp.max(jnp.abs(updates["params"]["to_code"]["kernel"]))) > 0


def test_usage_reports_perplexity_and_dead_codes():
    perplexity, dead = vqvae.usage(jnp.array([0, 1, 2, 3, 0, 1, 2, 3]), 6)
    assert float(perplexity) == pytest.approx(4.0) and float(dead) == 2.0
    perplexity, dead = vqvae.usage(jnp.zeros(10, jnp.int32), 6)
    assert float(perplexity) == pytest.approx(1.0) and float(dead) == 5.0


def test_vqvae_config_refuses_what_it_does_not_have():
    with pytest.raises(ConfigError, match="unconditional"):
        apply_overrides(get_config("cvae"), ["model.architecture=vqvae"])
    with pytest.raises(ConfigError, match="grad_clip"):
        apply_overrides(get_config("vae"), ["model.architecture=vqvae", "train.grad_clip=1"])


@pytest.mark.slow
def test_vqvae_trains_resumes_and_its_code_prior_samples(small_digits, tmp_path):
    cfg = apply_overrides(
        get_config("vae"), [*SMALL, "train.epochs=3", "train.batch_size=32", "checkpoint.every_epochs=1"]
    )
    straight = train_and_evaluate(cfg, tmp_path / "straight", dataset=small_digits, progress=False)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")  # stopped after epoch 2: its last
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / str(straight.history[-1]["step"]))  # checkpoint gone
    resumed = train_and_evaluate(cfg, tmp_path / "resumed", dataset=small_digits, progress=False)
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    tests = [e for e in straight.history if e["split"] == "test"]
    assert tests[-1]["recon"] < tests[0]["recon"] - 50 and tests[-1]["perplexity"] > 2
    assert tests[-1]["kl"] == pytest.approx(49 * math.log(16), rel=1e-5)  # 7 x 7 cells, uniform over 16 codes

    # the second stage, on the command line (the VQ-VAE run on the embedded digits)
    vq, prior = tmp_path / "vq", tmp_path / "prior"
    assert (
        main(
            ["train", "--model", "vae", "--workdir", str(vq), "--epochs", "2", "--no-progress"]
            + [a for s in [*SMALL, "data.num_train=1000"] for a in ("--set", s)]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--task",
                "code_prior",
                "--set",
                f"data.vqvae={vq}",
                "--epochs",
                "3",
                "--workdir",
                str(prior),
                "--no-progress",
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in (prior / "metrics.jsonl").read_text().splitlines()]
    nll = [e["nll"] for e in lines if e["split"] == "test"]
    # trained, the prior beats the uniform one over the codes: it tightens the VQ-VAE's bound
    assert nll[-1] < nll[0] and nll[-1] < 0.9 * 49 * math.log(16)
    out = tmp_path / "drawn.npy"
    assert main(["sample", "--workdir", str(vq), "--code-prior", str(prior), "--num", "5", "--out", str(out)]) == 0
    drawn = np.load(out)
    assert drawn.shape[0] == 5 and np.all((drawn >= 0) & (drawn <= 1))
