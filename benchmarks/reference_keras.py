"""The benchmark models in Keras 3 on TensorFlow, trained the way Keras users write it: functional
encoder and decoder, a keras.Model with a custom `train_step`, Adam, and `model.fit` over numpy
arrays (shuffled each epoch). "keras" compiles with jit_compile=False, "keras_xla" with True.
Prints one JSON line. Needs `pip install -e ".[compare]"`.

    python -m benchmarks.reference_keras '{"impl": "keras", "model": "article-vae", "batch": 128,
                                           "samples": 60000, "repeats": 5}'
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from benchmarks.common import ARCH, IMAGE_SHAPE, NUM_CLASSES, record, training_data  # noqa: E402


def build(a: dict) -> tuple[keras.Model, keras.Model]:
    h, w, c = IMAGE_SHAPE
    x_in, c_in = keras.Input(IMAGE_SHAPE), keras.Input((NUM_CLASSES,))
    t = x_in
    for features in a["encoder_conv"]:
        t = layers.Conv2D(features, 3, strides=a["conv_stride"], padding="same", activation="relu")(t)
    t = layers.Flatten()(t)
    if a["conditional"] and a["condition_site"] == "input":
        t = layers.Concatenate()([t, c_in])
    for size in a["encoder_hidden"]:
        t = layers.Dense(size, activation="relu")(t)
    if a["conditional"] and a["condition_site"] == "head":
        t = layers.Concatenate()([t, c_in])
    outputs = [layers.Dense(a["latent"])(t), layers.Dense(a["latent"])(t)]
    encoder = keras.Model([x_in, c_in] if a["conditional"] else x_in, outputs)

    z_in = keras.Input((a["latent"],))
    t = layers.Concatenate()([z_in, c_in]) if a["conditional"] else z_in
    for size in a["decoder_hidden"]:
        t = layers.Dense(size, activation="relu")(t)
    if a["decoder_conv"]:
        scale = 2 ** len(a["decoder_conv"])
        t = layers.Dense((h // scale) * (w // scale) * a["decoder_conv"][0], activation="relu")(t)
        t = layers.Reshape((h // scale, w // scale, a["decoder_conv"][0]))(t)
        for features in a["decoder_conv"]:
            t = layers.Conv2DTranspose(features, 3, strides=2, padding="same", activation="relu")(t)
        t = layers.Conv2D(c, 3, padding="same")(t)
    else:
        t = layers.Reshape(IMAGE_SHAPE)(layers.Dense(h * w * c)(t))
    decoder = keras.Model([z_in, c_in] if a["conditional"] else z_in, t)
    return encoder, decoder


class VAE(keras.Model):
    def __init__(self, a: dict, **kwargs):
        super().__init__(**kwargs)
        self.conditional = a["conditional"]
        self.encoder, self.decoder = build(a)
        self.seed = keras.random.SeedGenerator(0)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        x, y = data
        cond = tf.one_hot(y, NUM_CLASSES) if self.conditional else None
        with tf.GradientTape() as tape:
            mean, log_var = self.encoder([x, cond] if self.conditional else x)
            z = mean + tf.exp(0.5 * log_var) * keras.random.normal(tf.shape(mean), seed=self.seed)
            logits = self.decoder([z, cond] if self.conditional else z)
            recon = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=[1, 2, 3])
            kl = 0.5 * tf.reduce_sum(tf.exp(log_var) + mean**2 - 1.0 - log_var, axis=1)
            loss = tf.reduce_mean(recon + kl)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def measure(spec: dict) -> dict:
    keras.utils.set_random_seed(0)
    a, batch = ARCH[spec["model"]], int(spec["batch"])
    images, labels = training_data(int(spec.get("samples", 60000)), batch, data=spec.get("data", ""))
    model = VAE(a)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=spec["impl"] == "keras_xla")
    timer = EpochTimer()
    repeats = int(spec.get("repeats", 5))
    model.fit(images, labels, batch_size=batch, epochs=repeats + 1, shuffle=True, verbose=0, callbacks=[timer])
    return record(
        spec["impl"],
        spec,
        timer.times[1:],
        timer.times[0],
        len(images),
        keras=keras.__version__,
        tensorflow=tf.__version__,
    )


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
