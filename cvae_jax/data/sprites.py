"""Sprites with known factors of variation: the dSprites factor grid (Matthey et al. 2017), rendered by
the project, or read from the original `dsprites_ndarray_*.npz`.

The grid follows dSprites' factor definitions: 3 shapes (square, ellipse, heart) x 6 scales (0.5 to 1)
x 40 orientations (0 to 2 pi, both ends included as in dSprites) x 32 x-positions x 32 y-positions,
737,280 binary 64 x 64 images, indexed in that row-major order. The pixels are this module's, not the
original's (which cannot be fetched offline): each shape is a point-in-shape test at the pixel centres,
its centre moves one pixel per position step (pixel 16.5 to 47.5), and its half-size is 10 pixels x
scale. The arithmetic is exact float64 on exactly representable pixel coordinates, with cos and sin of
the 40 angles from Python's math module, so the images are the same on every CPU.

`FactorData` is what the disentanglement metrics sample from (cvae_jax.apps.disentanglement):
`sample_factors(n, rng)` draws factor classes independently and uniformly, `observations(factors)`
gives their images. `load(cfg)` gives the training data set: images uint8 0/255 (the grid does not fit
in memory as floats; the objective converts batches on the device), labels the shape.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cvae_jax.data.errors import DataError

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
SHAPES = ("square", "ellipse", "heart")
FACTOR_SIZES = (len(SHAPES), 6, 40, 32, 32)
SIZE = 64
HALF_SIZE = 10.0  # pixels, at scale 1
FIRST_CENTRE = 16.5  # pixel coordinate of the centre at position 0; one pixel per step
NUM_TEST = 5_000  # grid images held out as the test split (a seeded choice)
_CHUNK = 4_096


def factor_values(sizes: tuple[int, ...] = FACTOR_SIZES) -> dict[str, np.ndarray]:
    """Each factor's values, as dSprites defines them (shape: class index)."""
    return {
        "shape": np.arange(sizes[0], dtype=np.float64),
        "scale": np.linspace(0.5, 1.0, sizes[1]),
        "orientation": np.linspace(0.0, 2 * math.pi, sizes[2]),
        "pos_x": np.linspace(0.0, 1.0, sizes[3]),
        "pos_y": np.linspace(0.0, 1.0, sizes[4]),
    }


_ANGLES = factor_values()["orientation"]


# Snapped to the exact 0 and +-1 that the multiples of pi/2 have (sin(2 pi) would otherwise be -2.4e-16,
# and the last orientation would differ from the first where a pixel centre lies on a shape's edge).
def _snapped(value: float) -> float:
    return float(round(value)) if abs(value - round(value)) < 1e-12 else value


_COS = np.array([_snapped(math.cos(a)) for a in _ANGLES])
_SIN = np.array([_snapped(math.sin(a)) for a in _ANGLES])
_SCALES = factor_values()["scale"]
CROP = 32  # every shape lies in the 32 x 32 pixels from its position's corner (half-extent <= 14.2)


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether local coordinates (u right, v down, as image rows; 1 = the half-size) lie in each row's shape."""
    square = np.maximum(np.abs(u), np.abs(v)) <= 1.0
    ellipse = u * u + 4.0 * v * v <= 1.0  # twice as wide as high
    # The heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3 (y up), scaled to span about [-1, 1], lobes up.
    x, y = 1.15 * u, 0.12 - 1.15 * v
    r = x * x + y * y - 1.0
    heart = r * r * r <= x * x * y * y * y
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))


def render_direct(factors: np.ndarray, size: int = SIZE) -> np.ndarray:
    """uint8 [N, size, size] images (0 or 1) of factor classes [N, 5]: every pixel centre tested."""
    f = np.asarray(factors)
    pixel = np.arange(size, dtype=np.float64) + 0.5
    shape = f[:, 0, None, None]
    half = HALF_SIZE * _SCALES[f[:, 1]][:, None, None]
    cos, sin = _COS[f[:, 2]][:, None, None], _SIN[f[:, 2]][:, None, None]
    dx = pixel[None, None, :] - (FIRST_CENTRE + f[:, 3, None, None])  # columns: x
    dy = pixel[None, :, None] - (FIRST_CENTRE + f[:, 4, None, None])  # rows: y
    u = (cos * dx + sin * dy) / half  # the pixel rotated by -angle into the shape's frame
    v = (cos * dy - sin * dx) / half
    return _inside(shape, u, v).astype(np.uint8)


_SPRITES = None  # [3, 6, 40, CROP, CROP]: each shape, scale and orientation at position (0, 0)


def _sprites() -> np.ndarray:
    global _SPRITES
    if _SPRITES is None:
        base = np.stack(np.unravel_index(np.arange(np.prod(FACTOR_SIZES[:3])), FACTOR_SIZES[:3]), axis=1)
        base = np.concatenate([base, np.zeros((len(base), 2), base.dtype)], axis=1)
        _SPRITES = render_direct(base, CROP).reshape(*FACTOR_SIZES[:3], CROP, CROP)
    return _SPRITES


def render(factors: np.ndarray) -> np.ndarray:
    """uint8 [N, 64, 64] images (0 or 1) of factor classes [N, 5] (shape, scale, orientation, x, y).

    A position step moves the centre by exactly one pixel, so each image is its shape, scale and
    orientation's sprite at position (0, 0) moved by (x, y) pixels: the same pixels as testing every
    pixel centre (`render_direct`; a test holds them equal), made at the speed of a copy."""
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"factors must be [N, {len(FACTOR_SIZES)}] class indices, got shape {f.shape}")
    if (f < 0).any() or (f >= np.array(FACTOR_SIZES)).any():
        raise ValueError(f"factor classes must lie in 0..size-1 for sizes {FACTOR_SIZES}")
    out = np.zeros((len(f), SIZE, SIZE), np.uint8)
    offsets = np.arange(CROP)
    for start in range(0, len(f), _CHUNK):
        c = f[start : start + _CHUNK]
        rows = (c[:, 4, None] + offsets)[:, :, None]
        cols = (c[:, 3, None] + offsets)[:, None, :]
        n = np.arange(start, start + len(c))[:, None, None]
        out[n, rows, cols] = _sprites()[c[:, 0], c[:, 1], c[:, 2]]
    return out


class FactorData:
    """Images with known factors: a full grid of factor classes and a way to get each one's image."""

    def __init__(self, factor_sizes, images_of, name: str, factor_names=FACTOR_NAMES):
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        self.factor_names = tuple(factor_names)
        self._images_of = images_of
        self.name = name

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes))

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """int64 [num, K]: each factor's class drawn independently and uniformly."""
        return np.stack([rng.integers(0, size, num) for size in self.factor_sizes], axis=1)

    def index(self, factors: np.ndarray) -> np.ndarray:
        """The grid (row-major) index of each row of factor classes."""
        return np.ravel_multi_index(tuple(np.asarray(factors).T), self.factor_sizes)

    def factors(self, index: np.ndarray) -> np.ndarray:
        return np.stack(np.unravel_index(np.asarray(index), self.factor_sizes), axis=1)

    def images(self, factors: np.ndarray) -> np.ndarray:
        """uint8 [N, 64, 64] images (0 or 1) of the rows of factor classes."""
        return self._images_of(np.asarray(factors))

    def observations(self, factors: np.ndarray) -> np.ndarray:
        """float32 [N, 64, 64, 1] images in {0, 1} of the rows of factor classes (what encoders read)."""
        return self.images(factors)[..., None].astype(np.float32)


def rendered() -> FactorData:
    """The rendered dSprites grid."""
    return FactorData(FACTOR_SIZES, render, "sprites")


def read_dsprites(path: str | Path) -> FactorData:
    """The original `dsprites_ndarray_*.npz` (or any file in its format: `imgs` uint8 [N, 64, 64] in
    {0, 1}, `latents_classes` int [N, 6] with colour first, rows in the grid's row-major order)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.path {str(path)!r} does not exist; point it at dsprites_ndarray_*.npz, or set it to ''")
    try:
        with np.load(path) as f:  # no allow_pickle: the metadata entry is not needed
            missing = [k for k in ("imgs", "latents_classes") if k not in f.files]
            if missing:
                raise DataError(f"{str(path)!r} lacks {missing}; a dSprites file holds imgs and latents_classes")
            imgs, classes = f["imgs"], f["latents_classes"]
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read {str(path)!r} as a dSprites .npz ({type(e).__name__}: {e})") from None
    if imgs.ndim != 3 or classes.ndim != 2 or classes.shape != (len(imgs), 1 + len(FACTOR_SIZES)):
        raise DataError(
            f"{path.name}: expected imgs [N, H, W] and latents_classes [N, 6], got {imgs.shape} and {classes.shape}"
        )
    classes = classes[:, 1:]  # colour has one value
    sizes = tuple(int(s) for s in classes.max(axis=0) + 1)
    grid = np.stack(np.unravel_index(np.arange(len(classes)), sizes), axis=1)
    if len(classes) != np.prod(sizes) or not np.array_equal(classes, grid):
        raise DataError(
            f"{path.name}: the rows are not the full factor grid {sizes} in row-major order; the metrics "
            "need every combination (the original file has them all)"
        )
    images = imgs.astype(np.uint8)
    return FactorData(sizes, lambda factors: images[np.ravel_multi_index(tuple(factors.T), sizes)], path.stem)


def factor_data(path: str = "") -> FactorData:
    """The sprites of `data.path`: the rendered grid for "", else a dSprites-format file."""
    return read_dsprites(path) if path else rendered()


def load(cfg):
    """The training data set of data.source=sprites: the grid but NUM_TEST seeded images (the test
    split), or data.num_train of them when set; train images uint8 0/255, test float32; label: shape."""
    from cvae_jax.data.images import Dataset, Split

    data = factor_data(cfg.path)
    order = np.random.default_rng([0x5B21, len(data)]).permutation(len(data))
    num_test = min(NUM_TEST, len(data) // 10)
    test_index, train_index = np.sort(order[:num_test]), order[num_test:]
    if cfg.num_train:
        if cfg.num_train > len(train_index):
            raise DataError(f"data.num_train={cfg.num_train} exceeds the {len(train_index)} training sprites")
        train_index = train_index[: cfg.num_train]
    train_index = np.sort(train_index)
    train_factors, test_factors = data.factors(train_index), data.factors(test_index)
    train = Split((data.images(train_factors) * np.uint8(255))[..., None], train_factors[:, 0].astype(np.int32))
    test = Split(data.observations(test_factors), test_factors[:, 0].astype(np.int32))
    return Dataset(train=train, test=test, num_classes=data.factor_sizes[0], name=data.name)
