"""PNG pictures of a trained model. Only this module imports matplotlib (with the Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tile(images: np.ndarray, rows: int, cols: int, pad: int = 1) -> np.ndarray:
    """Arranges [rows * cols, H, W, C] images into one [rows*(H+pad), cols*(W+pad), C] picture."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    if n != rows * cols:
        raise ValueError(f"tile needs rows * cols = {rows * cols} images, got {n}")
    out = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad, c), images.dtype)
    for k in range(n):
        r, col = divmod(k, cols)
        out[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = images[k]
    return out


def save_grid(
    path: str | Path, images: np.ndarray, rows: int, cols: int, title: str = "", row_labels: list[str] | None = None
) -> None:
    """Saves images [rows * cols, H, W, C] in [0, 1] as one PNG grid."""
    plt = _pyplot()
    picture = tile(np.clip(images, 0.0, 1.0), rows, cols)
    fig, ax = plt.subplots(figsize=(max(3.0, cols * 0.6), max(3.0, rows * 0.6) + 0.4))
    ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0.0, vmax=1.0)
    if row_labels:
        h = images.shape[1] + 1
        ax.set_yticks([r * h + h / 2 - 1 for r in range(rows)], row_labels)
        ax.set_xticks([])
    else:
        ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_latent_scatter(path: str | Path, z: np.ndarray, labels: np.ndarray, title: str = "") -> None:
    """Scatter of 2-D latent codes coloured by class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
    fig.colorbar(points, ax=ax, label="class")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def manifold_grid(n: int, extent: float = 2.0) -> np.ndarray:
    """An n x n grid of 2-D latent points spanning [-extent, extent]^2, row-major, top row = high z[1]."""
    axis = np.linspace(-extent, extent, n, dtype=np.float32)
    zx, zy = np.meshgrid(axis, axis[::-1])
    return np.stack([zx.ravel(), zy.ravel()], axis=-1)


def save_series_scores(
    path: str | Path, values: np.ndarray, scores: dict[str, np.ndarray], is_anomaly: np.ndarray, title: str = ""
) -> None:
    """A series (top) and point-wise anomaly scores (one panel each), labelled anomalies shaded."""
    plt = _pyplot()
    fig, axes = plt.subplots(1 + len(scores), 1, figsize=(12, 1.8 * (1 + len(scores))), sharex=True)
    spans = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(is_anomaly, int), [0]])))
    for ax, (name, series) in zip(axes, [("series", values), *scores.items()]):
        ax.plot(series, lw=0.6)
        ax.set_ylabel(name, fontsize=8)
        for start, stop in zip(spans[::2], spans[1::2]):
            ax.axvspan(start, stop, color="red", alpha=0.2)
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_heatmap(
    path: str | Path, values: np.ndarray, row_labels: list[str], col_label: str, title: str = "", colorbar: str = ""
) -> None:
    """A [rows, cols] matrix as a heat map, one labelled row per setting."""
    plt = _pyplot()
    values = np.asarray(values, np.float64)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.4 * values.shape[1] + 3.5), 0.35 * values.shape[0] + 1.4))
    image = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.set_xticks(range(values.shape[1]))
    ax.set_xlabel(col_label)
    fig.colorbar(image, ax=ax, label=colorbar)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_bars(
    path: str | Path,
    groups: list[str],
    series: dict[str, np.ndarray],
    ylabel: str,
    title: str = "",
    reference: float | None = None,
) -> None:
    """Grouped bars: one group per entry of `groups`, one bar per series; an optional dashed reference line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(groups) * len(series) / 2 + 3), 3.2))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    if reference is not None:
        ax.axhline(reference, color="gray", ls="--", lw=0.8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
