"""The sprites grid: its pixels against a direct point-in-shape test and closed-form areas, its factor
bookkeeping, the reader of the original dSprites file format, and the training data it gives."""

import math

import numpy as np
import pytest

from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import images as data_lib
from cvae_jax.data import sprites
from cvae_jax.data.errors import DataError

GRID = sprites.rendered()


def test_the_grid_has_dsprites_factors_and_indexes_them_row_major():
    assert GRID.factor_sizes == (3, 6, 40, 32, 32) and len(GRID) == 737_280
    values = sprites.factor_values()
    assert values["scale"][[0, -1]].tolist() == [0.5, 1.0] and values["orientation"][-1] == 2 * math.pi
    rows = GRID.sample_factors(1000, np.random.default_rng(0))
    assert np.array_equal(GRID.factors(GRID.index(rows)), rows)
    assert GRID.index(np.array([[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0]])).tolist() == [1, 32, 245_760]


def test_shifted_sprites_equal_a_direct_test_of_every_pixel_centre():
    rows = GRID.sample_factors(400, np.random.default_rng(1))
    assert np.array_equal(sprites.render(rows), sprites.render_direct(rows))


def test_one_position_step_moves_the_shape_one_pixel():
    rows = GRID.sample_factors(50, np.random.default_rng(2))
    rows[:, 3:] = np.minimum(rows[:, 3:], 30)
    moved_x, moved_y = rows.copy(), rows.copy()
    moved_x[:, 3] += 1
    moved_y[:, 4] += 1
    image = sprites.render_direct(rows)
    assert np.array_equal(sprites.render_direct(moved_x), np.roll(image, 1, axis=2))
    assert np.array_equal(sprites.render_direct(moved_y), np.roll(image, 1, axis=1))


def test_the_first_and_last_orientations_are_the_same_angle():
    rows = np.array([[s, c, 0, 15, 15] for s in range(3) for c in range(6)])
    last = rows.copy()
    last[:, 2] = 39
    assert np.array_equal(sprites.render(rows), sprites.render(last))


@pytest.mark.parametrize("scale_class", range(6))
def test_areas_are_the_shapes_closed_form_areas(scale_class):
    half = sprites.HALF_SIZE * sprites.factor_values()["scale"][scale_class]
    square, ellipse = sprites.render(np.array([[0, scale_class, 0, 15, 15], [1, scale_class, 0, 15, 15]])).sum((1, 2))
    # Pixel centres on a unit grid through the centre: the square is (2 floor(half) + 1)^2 pixels
    # (half is within 1e-9 of an integer here, either side); the ellipse's count is its area pi a b
    # within its perimeter's pixels.
    side = 2 * math.floor(half + 1e-9) + 1
    assert square in (side**2, (side - 2) ** 2)
    assert abs(ellipse - math.pi * half * half / 2) < 2 * math.pi * half


def test_bad_factors_are_refused():
    with pytest.raises(ValueError, match="class indices"):
        sprites.render(np.zeros((2, 4), int))
    with pytest.raises(ValueError, match="0..size-1"):
        sprites.render(np.array([[3, 0, 0, 0, 0]]))


def write_dsprites(path, sizes=(1, 3, 2, 2, 4, 4), shuffle=False):
    """A file in the original dSprites format (imgs uint8 {0, 1}, latents_classes with colour first)
    over a small grid, its images rendered at spread-out classes of the full grid."""
    classes = np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), axis=1)
    full = classes[:, 1:] * np.array([1, 5, 10, 9, 9])  # classes of the full grid, within range
    imgs = sprites.render(full)
    if shuffle:
        order = np.random.default_rng(0).permutation(len(classes))
        classes, imgs = classes[order], imgs[order]
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=classes.astype(np.float64))
    return full, imgs


def test_a_dsprites_file_gives_the_same_interface(tmp_path):
    full, imgs = write_dsprites(tmp_path / "dsprites_ndarray_small.npz")
    data = sprites.factor_data(str(tmp_path / "dsprites_ndarray_small.npz"))
    assert data.factor_sizes == (3, 2, 2, 4, 4) and data.factor_names == sprites.FACTOR_NAMES
    rows = data.sample_factors(20, np.random.default_rng(0))
    expected = sprites.render(rows * np.array([1, 5, 10, 9, 9]))
    assert np.array_equal(data.observations(rows)[..., 0], expected.astype(np.float32))


def test_a_file_that_is_not_the_full_grid_or_not_dsprites_is_refused(tmp_path):
    write_dsprites(tmp_path / "shuffled.npz", shuffle=True)
    with pytest.raises(DataError, match="not the full factor grid"):
        sprites.factor_data(str(tmp_path / "shuffled.npz"))
    np.savez(tmp_path / "other.npz", x_train=np.zeros(3))
    with pytest.raises(DataError, match="lacks"):
        sprites.factor_data(str(tmp_path / "other.npz"))
    with pytest.raises(DataError, match="does not exist"):
        sprites.factor_data(str(tmp_path / "missing.npz"))


def test_training_data_holds_out_a_test_split_and_labels_the_shape(tmp_path):
    write_dsprites(tmp_path / "d.npz")
    cfg = apply_overrides(get_config("vae", "sprites"), [f"data.path={tmp_path / 'd.npz'}"])
    dataset = data_lib.load(cfg.data)
    assert dataset.train.images.dtype == np.uint8 and set(np.unique(dataset.train.images)) == {0, 255}
    assert dataset.test.images.dtype == np.float32 and dataset.image_shape == (64, 64, 1)
    assert len(dataset.train) + len(dataset.test) == 192 and len(dataset.test) == 19
    assert dataset.num_classes == 3 and set(dataset.train.labels.tolist()) == {0, 1, 2}
    # No test image is a training image's twin (the grid has no duplicates at these classes).
    train = {im.tobytes() for im in (dataset.train.images // 255)}
    assert not any(im.astype(np.uint8).tobytes() in train for im in dataset.test.images)
    few = data_lib.load(apply_overrides(cfg, ["data.num_train=50"]).data)
    assert len(few.train) == 50 and np.array_equal(few.test.images, dataset.test.images)
    with pytest.raises(DataError, match="exceeds"):
        data_lib.load(apply_overrides(cfg, ["data.num_train=500"]).data)


@pytest.mark.slow
def test_train_beta_tcvae_on_sprites_then_evaluate_disentanglement(tmp_path, capsys):
    import json

    from cvae_jax.cli import main

    write_dsprites(tmp_path / "d.npz")
    run = tmp_path / "run"
    small = ["model.encoder_conv=[8,8]", "model.decoder_conv=[8,8]", "model.encoder_hidden=[32]"]
    small += ["model.decoder_hidden=[32]", "data.validation=0", "train.epochs=1"]
    sets = [f"data.path={tmp_path / 'd.npz'}", "train.objective=beta_tcvae", "train.beta=4", *small]
    argv = ["train", "--model", "vae", "--preset", "sprites", "--workdir", str(run), "--no-progress"]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    assert main(["evaluate", "--workdir", str(run), "--disentanglement", "--sizes", "0.02"]) == 0
    result = json.loads((run / "disentanglement.json").read_text())
    assert result["factors"] == dict(zip(sprites.FACTOR_NAMES, (3, 2, 2, 4, 4)))
    assert set(result["metrics"]) == {"beta_vae", "factor_vae", "mig", "dci", "sap", "modularity_explicitness"}
    assert result["checkpoint_step"] == 173 // 64 and result["sizes"] == "0.02"
