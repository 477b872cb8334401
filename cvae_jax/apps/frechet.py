"""The Fréchet judge distance: the Fréchet distance between Gaussians fitted to the features of real and
of generated images, in the feature space of the project's independent judge (the penultimate layer of
`cvae_jax.apps.classifier.SmallCNN`, trained on real images only).

It is built as FID is (Heusel et al. 2017), but on another network: it is *not* Inception FID, and its
values do not compare with published FIDs. Lower is closer; compare it only between models judged by
the same judge on the same data.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def frechet_from_moments(mean_a, cov_a, mean_b, cov_b) -> float:
    """|m_a - m_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)), the squared 2-Wasserstein distance of two Gaussians."""
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    with warnings.catch_warnings():  # features that are 0 on every image make the product singular
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.all(np.isfinite(root)):  # then, as pytorch-fid does, a tiny offset on both diagonals
            offset = 1e-6 * np.eye(len(cov_a))
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):  # round-off can leave tiny imaginary parts
        root = root.real
    diff = mean_a - mean_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted (mean, unbiased covariance) to two feature sets [N, F]."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature sets [N, F] of the same F and N >= 2, got {a.shape} and {b.shape}")
    return frechet_from_moments(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def judge_distance(judge, real_images: np.ndarray, generated_images: np.ndarray) -> float:
    """The Fréchet judge distance of generated images [N, H, W, C] in [0, 1] to real ones."""
    return frechet_distance(judge.features(real_images), judge.features(generated_images))
