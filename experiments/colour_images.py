"""A ResNet VAE (or the hierarchical VAE) on colour images that can be had offline: Fashion-MNIST padded
to 32x32 and tinted into 3 channels, a documented stand-in for a real colour data set (CIFAR-10 and
others load through TFDS where they are prepared: data.source=tfds, data.name=cifar10).

    apt-get install -y dataset-fashion-mnist                  # IDX files in /usr/share/datasets/fashion-mnist
    python experiments/colour_images.py --data /usr/share/datasets/fashion-mnist            # CPU budget
    python experiments/colour_images.py --data DIR --preset hvae --train 60000 --epochs 50 \\
        --widths 64,128,256 --set model.compute_dtype=bfloat16                            # on a GPU

Tinting: every image gets one colour (a random hue at full saturation, seeded by its index), and
each pixel is its grey level times that colour, as 8-bit RGB; the likelihood is the discretized
logistic mixture on those 8-bit values, so the test -ELBO in bits/dim is a proper (upper bound of
the) negative log-likelihood of the tinted images. The default budget trains a narrower network
(widths 32-64-128) on the first 20,000 training images for 2 epochs (experiments/README.md gives
its wall time on a 2-core CPU).
Writes experiments/results/colour_<preset>.json and _samples.png / _reconstructions.png.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import shutil
import time
from pathlib import Path

import _shared
import numpy as np

from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import images as data


def tinted(images: np.ndarray, seed: int) -> np.ndarray:
    """uint8 [N, 32, 32, 3]: grey images in [0, 1] [N, 28, 28, 1] padded by 2 and tinted per image."""
    hues = np.random.default_rng(seed).uniform(size=len(images))
    colours = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues], np.float32)  # [N, 3]
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.round(255 * padded * colours[:, None, None, :]).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of Fashion-MNIST's IDX files")
    parser.add_argument("--preset", choices=("resnet", "hvae"), default="resnet")
    parser.add_argument("--train", type=int, default=20_000, help="the first N training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--widths", default="32,64,128", help="model.resnet_widths")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workdir", default="runs/colour")
    parser.add_argument("--set", action="append", default=[], help="more config overrides")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    grey = data.load_idx(args.data, progress=False)
    workdir = Path(f"{args.workdir}_{args.preset}")
    workdir.mkdir(parents=True, exist_ok=True)
    npz = workdir.parent / f"{workdir.name}_data.npz"
    np.savez(
        npz,
        x_train=tinted(grey.train.images[: args.train], 1),
        y_train=grey.train.labels[: args.train],
        x_test=tinted(grey.test.images, 2),
        y_test=grey.test.labels,
    )
    overrides = [
        "data.source=npz",
        f"data.path={npz.resolve()}",
        f"model.resnet_widths={args.widths}",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch}",
        "train.eval_batch_size=500",
        f"seed={args.seed}",
        *args.set,
    ]
    cfg = apply_overrides(get_config("vae", args.preset), overrides)
    start = time.perf_counter()
    run = _shared.trained(cfg, str(workdir))
    seconds = time.perf_counter() - start
    del run
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    tests = [line for line in lines if line["split"] == "test"]
    validation = [line for line in lines if line["split"] == "validation"]
    for name in ("samples", "reconstructions"):
        shutil.copy(workdir / f"{name}.png", _shared.picture(f"colour_{args.preset}_{name}"))
    _shared.save_json(
        f"colour_{args.preset}",
        {
            "data": "Fashion-MNIST padded to 32x32 and tinted (a stand-in for colour data)",
            "train_images": args.train,
            "overrides": overrides,
            "test_bits_per_dim": tests[-1]["bits_per_dim"],
            "test_neg_elbo": tests[-1]["neg_elbo"],
            "validation_bits_per_dim": [line["bits_per_dim"] for line in validation],
            "test_bits_per_dim_by_epoch": [line["bits_per_dim"] for line in tests],
            "wall_seconds": seconds,
        },
    )


if __name__ == "__main__":
    main()
