"""Anomaly detection with a trained (C)VAE: per-example scores, a calibrated threshold, AUROC.

A model trained on normal data only gives anomalies low likelihood. Score kinds (higher = more
anomalous), all in nats except `recon`:
  nll       -log p(x[ | c]), importance-sampled with K samples (the tightest; see evaluate.py)
  neg_elbo  -ELBO(x), one posterior sample
  recon     squared error between x and the decoded posterior mean, summed over dimensions
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from cvae_jax.apps import evaluate, inference
from cvae_jax.core import objectives

SCORES = ("nll", "neg_elbo", "recon")


def make_scorer(model, kind: str, *, num_classes: int, num_samples: int = 100, chunk: int = 50):
    """Returns score(params, batch, key) -> [B] for batches {"image"[, "label"]}."""
    if kind not in SCORES:
        raise ValueError(f"score kind must be one of {SCORES}, got {kind!r}")
    if kind == "nll":
        if num_samples < 1:
            raise ValueError(f"the number of importance samples must be >= 1, got {num_samples}")
        chunk = math.gcd(num_samples, chunk)
        log_px = evaluate.make_log_likelihood(model, num_classes=num_classes, num_samples=num_samples, chunk=chunk)
        return lambda params, batch, key: -log_px(params, batch, key)
    if kind == "neg_elbo":
        terms = objectives.make_elbo_terms(model, num_classes=num_classes)
        return lambda params, batch, key: terms(params, batch, key)["neg_elbo"]

    def recon(params, batch, key):
        x, condition = objectives.inputs_of(model, batch, key, num_classes, False)
        fitted = inference.reconstruct(model, params, x, condition)
        return jnp.sum(jnp.square(x - fitted).reshape(x.shape[0], -1), axis=1)

    return recon


@functools.lru_cache(maxsize=16)
def _compiled_scorer(model, kind: str, num_classes: int, num_samples: int):
    return jax.jit(make_scorer(model, kind, num_classes=num_classes, num_samples=num_samples))


def compiled_scorer(model, kind: str, *, num_classes: int, num_samples: int = 100):
    """The jitted make_scorer, shared by every call with an equal model and settings (flax modules
    compare by value), so repeated `scores` calls compile once; a model that cannot be hashed
    (e.g. a custom prior holding an array) gets a fresh one."""
    try:
        return _compiled_scorer(model, kind, num_classes, num_samples)
    except TypeError:
        return jax.jit(make_scorer(model, kind, num_classes=num_classes, num_samples=num_samples))


def scores(
    model,
    params,
    images,
    labels=None,
    *,
    kind: str = "nll",
    num_classes: int,
    num_samples: int = 100,
    batch_size: int = 500,
    seed: int = 0,
) -> np.ndarray:
    """Anomaly score of every image [N, H, W, C] (labels [N] for a CVAE): float64 [N]."""
    images = np.asarray(images, np.float32)
    if model.conditional and labels is None:
        raise ValueError("a CVAE scores x given its condition: pass labels (one per image)")
    if not model.conditional and labels is not None:
        raise ValueError("an unconditional VAE takes no labels")
    if labels is not None:
        labels = inference.check_labels(labels, len(images), num_classes, "labels")
    score = compiled_scorer(model, kind, num_classes=num_classes, num_samples=num_samples)
    key = jax.random.key(seed)
    out = []
    for i in range(0, len(images), batch_size):
        batch = {"image": images[i : i + batch_size]}
        if labels is not None:
            batch["label"] = labels[i : i + batch_size]
        n = len(batch["image"])
        if i and n < batch_size:  # pad a short last batch to the compiled shape: one compile, not two
            batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - n, axis=0)]) for k, v in batch.items()}
        out.append(np.asarray(score(params, batch, jax.random.fold_in(key, i)), np.float64)[:n])
    result = np.concatenate(out)
    if not np.all(np.isfinite(result)):
        raise ValueError(f"{int(np.sum(~np.isfinite(result)))} scores are not finite: check the inputs lie in [0, 1]")
    return result


def calibrate_threshold(normal_scores, fpr: float) -> float:
    """The threshold that flags (score > threshold) at most a share `fpr` of held-out normal data."""
    normal_scores = np.asarray(normal_scores, np.float64)
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"the false-positive rate must lie in (0, 1), got {fpr}")
    if normal_scores.size == 0:
        raise ValueError("no normal scores to calibrate the threshold on")
    return float(np.quantile(normal_scores, 1.0 - fpr, method="higher"))


def auroc(scores_, is_anomaly) -> float:
    """Area under the ROC curve: P(score of an anomaly > score of a normal example), ties counting 1/2
    (the Mann-Whitney U statistic over n_anomalies * n_normal)."""
    scores_, is_anomaly = np.asarray(scores_, np.float64), np.asarray(is_anomaly, bool)
    if scores_.shape != is_anomaly.shape:
        raise ValueError(f"scores {scores_.shape} and labels {is_anomaly.shape} must have the same shape")
    pos, neg = scores_[is_anomaly], scores_[~is_anomaly]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs both anomalies and normal examples")
    return float(stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def detection_rates(scores_, is_anomaly, threshold: float) -> dict[str, float]:
    """Precision, recall and false-positive rate of flagging score > threshold."""
    flagged, is_anomaly = np.asarray(scores_) > threshold, np.asarray(is_anomaly, bool)
    true_pos = int(np.sum(flagged & is_anomaly))
    return {
        "precision": true_pos / max(int(flagged.sum()), 1),
        "recall": true_pos / max(int(is_anomaly.sum()), 1),
        "false_positive_rate": int(np.sum(flagged & ~is_anomaly)) / max(int((~is_anomaly).sum()), 1),
        "flagged": int(flagged.sum()),
    }
