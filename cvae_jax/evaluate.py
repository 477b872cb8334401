"""Evaluation of trained models beyond the ELBO."""

from __future__ import annotations

import numpy as np

from cvae_jax import inference


def conditional_samples(model, params, key, num_classes: int, per_class: int, latent_dim: int):
    """`per_class` samples of every class: (images [num_classes * per_class, H, W, C], labels)."""
    labels = np.repeat(np.arange(num_classes), per_class)
    condition = inference.condition_for(model, labels, num_classes, len(labels))
    return np.asarray(inference.sample(model, params, key, len(labels), latent_dim, condition)), labels


def conditional_accuracy(classifier, model, params, key, num_classes: int, latent_dim: int,
                         per_class: int = 100) -> tuple[float, np.ndarray]:
    """Share of class-k samples that `classifier` assigns to class k: (overall, per class)."""
    images, labels = conditional_samples(model, params, key, num_classes, per_class, latent_dim)
    correct = classifier.predict(images) == labels
    return float(correct.mean()), correct.reshape(num_classes, per_class).mean(axis=1)


__all__ = ["conditional_accuracy", "conditional_samples"]
