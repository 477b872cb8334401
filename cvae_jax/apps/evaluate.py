"""Evaluation of trained models beyond the ELBO."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.apps import inference
from cvae_jax.core import distributions, objectives, posteriors


def conditional_samples(model, params, key, num_classes: int, per_class: int):
    """`per_class` samples of every class: (images [num_classes * per_class, H, W, C], labels)."""
    labels = np.repeat(np.arange(num_classes), per_class)
    condition = inference.condition_for(model, labels, num_classes, len(labels))
    return np.asarray(inference.sample(model, params, key, len(labels), condition)), labels


def conditional_accuracy(
    classifier, model, params, key, num_classes: int, per_class: int = 100
) -> tuple[float, np.ndarray]:
    """Share of class-k samples that `classifier` assigns to class k: (overall, per class)."""
    images, labels = conditional_samples(model, params, key, num_classes, per_class)
    correct = classifier.predict(images) == labels
    return float(correct.mean()), correct.reshape(num_classes, per_class).mean(axis=1)


__all__ = ["conditional_accuracy", "conditional_samples"]


# --------------------------------------------------------------------------- likelihood and latent usage


def make_log_likelihood(model, *, num_classes: int, num_samples: int, chunk: int = 20, binarize: bool = False):
    """Returns log_px(params, batch, key) -> [B]: the importance-sampled estimate of log p(x[ | c]),

        log p(x) ~= log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x),

    with K = num_samples drawn `chunk` at a time inside a lax.scan (a running logsumexp), so memory
    stays bounded by chunk * B decoder outputs whatever K is. It is the IWAE bound with K samples:
    it never exceeds log p(x) in expectation and tightens as K grows."""
    if num_samples % chunk:
        raise ValueError(f"num_samples={num_samples} must be a multiple of chunk={chunk}")
    gaussian = posteriors.is_gaussian(getattr(model, "posterior", None))

    def log_px(params, batch, key):
        x, condition = objectives.inputs_of(model, batch, key, num_classes, binarize)
        mean, log_var, context = model.apply(params, x, condition, method=model.encode_full)

        def body(acc, i):
            if gaussian:
                eps = distributions.normal(jax.random.fold_in(key, i + 1), (chunk, *mean.shape))
                z, log_q = mean + jnp.exp(0.5 * log_var) * eps, None
            else:  # any other posterior weighs each of its samples by its own log-density
                z, log_q = posteriors.sample(
                    model, params, jax.random.fold_in(key, i + 1), mean, log_var, chunk, context
                )
            log_lik, log_prior, log_q = objectives.log_weight_parts(
                model, params, x, condition, mean, log_var, z, log_q
            )
            return jnp.logaddexp(acc, jax.nn.logsumexp(log_lik + log_prior - log_q, axis=0)), None

        acc, _ = jax.lax.scan(body, jnp.full(mean.shape[:1], -jnp.inf), jnp.arange(num_samples // chunk))
        return acc - math.log(num_samples)

    return log_px


def active_units(posterior_means: np.ndarray, threshold: float = 0.01) -> tuple[int, np.ndarray]:
    """Burda et al. (2015): unit u is active if Cov_x(E_q[z_u | x]) > threshold. Returns (count, variances)."""
    variances = np.var(np.asarray(posterior_means, np.float64), axis=0)
    return int(np.sum(variances > threshold)), variances


def mutual_information(mean: np.ndarray, log_var: np.ndarray, z: np.ndarray, block: int = 512) -> float:
    """I(x; z) under q(x, z) = p_data(x) q(z | x), estimated as in He et al. (2019):
    E_x[E_q log q(z|x)] - E_z[log q(z)], q(z) ~= (1/N) sum_n q(z | x_n) over the N examples given.

    log q(z_i | x_n) for all pairs is an [N, N] table, built `block` rows at a time, each by matrix
    products (sum_d (z - m)^2 / v = z^2 . 1/v - 2 z . m/v + m^2 . 1/v): memory O(block N), where
    the [N, N, D] broadcast took 13 GB per temporary at N = 10,000, D = 16."""
    mean, log_var, z = (np.asarray(a, np.float64) for a in (mean, log_var, z))
    n, d = mean.shape
    neg_entropy = np.mean(-0.5 * d * (math.log(2 * math.pi) + 1) - 0.5 * log_var.sum(1))
    inv_var = np.exp(-log_var)  # [N, D]
    scaled_mean = mean * inv_var
    offset = (mean * scaled_mean).sum(1) + log_var.sum(1) + d * math.log(2 * math.pi)  # [N (x_n)]
    log_agg = np.empty(n)
    for i in range(0, n, block):
        zb = z[i : i + block]
        log_q = -0.5 * ((zb * zb) @ inv_var.T - 2 * zb @ scaled_mean.T + offset)  # [block (z), N (x_n)]
        log_agg[i : i + block] = np.logaddexp.reduce(log_q, axis=1) - math.log(n)
    return float(neg_entropy - np.mean(log_agg))


def mutual_information_of(log_q_rows, n: int, block: int = 128) -> float:
    """The same estimate of I(x; z) for any posterior that scores any z: `log_q_rows(start, stop)` gives
    log q(z_i | x_n) [stop - start, n] for the examples' own samples z_i, i in [start, stop). E_q log q(z|x)
    is then the table's diagonal (one sample each) rather than the Gaussian's closed-form entropy."""
    own, log_agg = [], []
    for i in range(0, n, block):
        rows = np.asarray(log_q_rows(i, min(i + block, n)), np.float64)
        own.append(rows[np.arange(len(rows)), np.arange(i, i + len(rows))])
        log_agg.append(np.logaddexp.reduce(rows, axis=1) - math.log(n))
    return float(np.mean(np.concatenate(own)) - np.mean(np.concatenate(log_agg)))


def posterior_mutual_information(model, params, mean, log_var, context, z, block: int = 128) -> float:
    """`mutual_information_of` with the model's posterior densities (`posterior_log_prob`), jit-compiled
    a fixed block of z at a time against all N examples' posteriors."""
    n = len(z)

    @jax.jit
    def table(zb):  # [block, D] -> log q(zb_i | x_n) [block, N]
        return model.apply(params, zb[:, None, :], mean, log_var, context, method=model.posterior_log_prob)

    def rows(start, stop):
        zb = np.zeros((block, z.shape[1]), z.dtype)
        zb[: stop - start] = z[start:stop]
        return np.asarray(table(zb))[: stop - start]

    return mutual_information_of(rows, n, block)


# Examples on which the mutual information of a non-Gaussian posterior is estimated: its table of
# log q(z_i | x_n) costs N^2 posterior densities (an IAF's, D passes of its MADEs each).
MI_EXAMPLES = 2_000

# Draws per example that estimate E_q[z | x] (for the active units) under a non-Gaussian posterior.
POSTERIOR_DRAWS = 64


def evaluate_model(
    model,
    params,
    config,
    dataset,
    *,
    num_importance_samples: int = 1000,
    chunk: int = 20,
    batch_size: int = 100,
    num_examples: int | None = None,
    seed: int = 0,
) -> dict:
    """Test-set metrics of a trained model: ELBO terms, importance-sampled NLL, bits/dim, active units,
    per-dimension KL (factorized priors), mutual information. All in nats per example unless named.
    Under any posterior the NLL weighs each sample by its own log q, and the active units read E_q[z | x]
    (for a non-Gaussian one, the mean of POSTERIOR_DRAWS samples); the mutual information uses the
    diagonal Gaussian's closed-form densities on every example, another posterior's `log_prob` on the
    first MI_EXAMPLES (None for a posterior without one)."""
    inference._single_latent(model, "importance-sampled NLL, active units and mutual information")
    for name, value in (
        ("num_importance_samples", num_importance_samples),
        ("chunk", chunk),
        ("batch_size", batch_size),
        ("num_examples", 1 if num_examples is None else num_examples),
    ):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    test = dataset.test
    n = len(test) if num_examples is None else min(num_examples, len(test))
    images, labels = test.images[:n], test.labels[:n]
    chunk = min(chunk, num_importance_samples)
    key = jax.random.key(seed)
    elbo_terms = objectives.make_elbo_terms(model, num_classes=dataset.num_classes, binarize=config.data.binarize)
    gaussian = posteriors.is_gaussian(getattr(model, "posterior", None))

    @jax.jit
    def terms_fn(params, batch, batch_key):
        """ELBO terms, and the posterior mean, log-variance and one sample z of every example."""
        x, condition = objectives.inputs_of(model, batch, batch_key, dataset.num_classes, config.data.binarize)
        if not gaussian:  # E_q[z | x] of another posterior: the mean of POSTERIOR_DRAWS of its samples
            mean, log_var, context = model.apply(params, x, condition, method=model.encode_full)
            draw_key = jax.random.fold_in(batch_key, 9)
            zs, _ = posteriors.sample(model, params, draw_key, mean, log_var, POSTERIOR_DRAWS, context)
            own = (mean, log_var, context)  # the posterior's own parameters, for its densities
            return elbo_terms(params, batch, batch_key), jnp.mean(zs, 0), own, zs[0]
        mean, log_var = model.apply(params, x, condition, method=model.encode)
        z = mean + jnp.exp(0.5 * log_var) * distributions.normal(jax.random.fold_in(batch_key, 9), mean.shape)
        return elbo_terms(params, batch, batch_key), mean, (mean, log_var, None), z

    log_px = jax.jit(
        make_log_likelihood(
            model,
            num_classes=dataset.num_classes,
            num_samples=num_importance_samples,
            chunk=chunk,
            binarize=config.data.binarize,
        )
    )
    terms, lls, means, owns, zs = [], [], [], [], []
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        batch = {"image": images[i : i + batch_size], "label": labels[i : i + batch_size]}
        batch_key = jax.random.fold_in(key, i)
        lls.append(np.asarray(log_px(params, batch, batch_key)))
    is_seconds = time.perf_counter() - start
    for i in range(0, n, batch_size):
        batch = {"image": images[i : i + batch_size], "label": labels[i : i + batch_size]}
        batch_key = jax.random.fold_in(key, i)
        batch_terms, mean, own, z = jax.device_get(terms_fn(params, batch, batch_key))
        terms.append(batch_terms)
        means.append(mean)
        owns.append(own)
        zs.append(z)
    ll = np.concatenate(lls)
    mean, z = np.concatenate(means), np.concatenate(zs)
    own = [None if parts[0] is None else np.concatenate(parts) for parts in zip(*owns)]  # mean, log_var, context
    merged = {k: np.concatenate([t[k] for t in terms]) for k in terms[0]}
    num_au, _ = active_units(mean)
    dims = int(np.prod(dataset.image_shape))
    nll = float(-ll.mean())
    result = {
        "num_examples": n,
        "num_importance_samples": num_importance_samples,
        "neg_elbo": float(merged["neg_elbo"].mean()),
        "recon": float(merged["recon"].mean()),
        "kl": float(merged["kl"].mean()),
        "nll": nll,
        "bits_per_dim": nll / (dims * math.log(2)),
        "active_units": num_au,
        "latent_dim": int(mean.shape[1]),
        "mutual_information": mutual_information(own[0], own[1], z) if gaussian else None,
        "nll_seconds": is_seconds,
        "conditional": bool(model.conditional),
    }
    if not gaussian and posteriors.has_log_prob(model):
        m = min(n, MI_EXAMPLES)
        parts = [None if a is None else jnp.asarray(a[:m]) for a in own]
        result["mutual_information"] = posterior_mutual_information(model, params, *parts, z[:m])
        result["mutual_information_examples"] = m
    if "kl_per_dim" in merged:
        result["kl_per_dim"] = merged["kl_per_dim"].mean(0).round(4).tolist()
    return result
