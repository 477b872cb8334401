"""An independent digit classifier, trained on real images only, to judge generated images.

It shares no code or parameters with the VAE: a small CNN, its own loss and its own optimizer.
Used to measure conditional accuracy (the share of class-k samples classified as k), and, through its
penultimate layer's features, the Fréchet judge distance of generated images (`cvae_jax.apps.frechet`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


class SmallCNN(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, features: bool = False):
        """Class logits, or with `features` the penultimate layer's 128 activations."""
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, padding="SAME")(x))
        x = nn.relu(nn.Conv(32, (3, 3), strides=2, padding="SAME")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128)(x))
        return x if features else nn.Dense(self.num_classes)(x)


@dataclasses.dataclass
class Classifier:
    module: SmallCNN
    params: dict

    def predict(self, images, batch_size: int = 1000) -> np.ndarray:
        """Predicted class of each image [N, H, W, C] in [0, 1]."""
        apply = jax.jit(self.module.apply)
        images = np.asarray(images, np.float32)
        preds = [
            np.asarray(jnp.argmax(apply(self.params, images[i : i + batch_size]), -1))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(preds)

    def features(self, images, batch_size: int = 1000) -> np.ndarray:
        """float64 [N, 128]: the penultimate layer's activations of images [N, H, W, C] in [0, 1]."""
        apply = jax.jit(lambda p, x: self.module.apply(p, x, features=True))
        images = np.asarray(images, np.float32)
        return np.concatenate(
            [
                np.asarray(apply(self.params, images[i : i + batch_size]), np.float64)
                for i in range(0, len(images), batch_size)
            ]
        )

    def accuracy(self, images, labels) -> float:
        return float(np.mean(self.predict(images) == np.asarray(labels)))


def train_classifier(
    images: np.ndarray, labels: np.ndarray, num_classes: int, *, epochs: int = 15, batch_size: int = 64, seed: int = 0
) -> Classifier:
    """Trains SmallCNN with Adam on (images [N, H, W, C] in [0, 1], int labels)."""
    module = SmallCNN(num_classes)
    key = jax.random.key(seed)
    tx = optax.adam(1e-3)

    @jax.jit  # one program: flax's initializers and Adam's zeros op by op compile a dozen programs
    def init(key, x):
        params = module.init(key, x)
        return params, tx.init(params)

    params, opt_state = init(key, jnp.zeros((1, *images.shape[1:])))

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(module.apply(p, x), y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for i in range(0, len(images) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            params, opt_state = step(params, opt_state, images[idx], labels[idx])
    return Classifier(module=module, params=params)
