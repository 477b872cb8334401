"""Estimators on the aggregate posterior q(z) = (1/N) sum_n q(z | x_n), from one minibatch: what the
disentangling and MMD objectives penalize.

* `log_aggregate`: log q(z_i) and log prod_d q(z_id) for each sample of a batch, by minibatch-weighted
  (MWS) or minibatch-stratified (MSS) sampling (Chen et al. 2018, "Isolating Sources of
  Disentanglement in VAEs", section 4.1 and appendix C);
* `dip_covariance`: Cov_q[z] as DIP-VAE-I (the covariance of the means) or -II (plus the mean
  variance) estimates it, and `dip_penalty` (Kumar et al. 2018, "Variational Inference of
  Disentangled Latent Concepts from Unlabeled Observations", eqs. 6 and 8);
* `mmd`: the unbiased estimate of the squared maximum mean discrepancy between two samples with an RBF
  or inverse multiquadric kernel (Gretton et al. 2012; as InfoVAE, Zhao et al. 2017, and WAE-MMD,
  Tolstikhin et al. 2018, use it).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from cvae_jax.core.distributions import LOG_2PI


def pairwise_log_density(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """[B, B, D]: log N(z[i, d] | mean[j, d], exp(log_var[j, d])) for every sample i and data point j."""
    diff = z[:, None, :] - mean[None, :, :]
    return -0.5 * (LOG_2PI + log_var[None] + diff * diff * jnp.exp(-log_var[None]))


def log_weights(batch: int, dataset_size: int, estimator: str) -> jax.Array:
    """[B, B] log importance weights of data point j in sample i's estimate of q(z_i).

    "mws": 1 / (N B) each (Chen et al. eq. S5). "mss": the stratified weights (their appendix C.2, with
    M = B - 1 other points in the batch): 1/N for the sample's own point, (N - M)/(N M) for one other
    (here the next, cyclically), 1/M for the M - 1 others; each row sums to one. (The diagonal indexing
    of the authors' code is known to be off, rtqichen/beta-tcvae pull request 1; this follows the text.)"""
    n = float(dataset_size)
    if estimator == "mws":
        return jnp.full((batch, batch), -math.log(n * batch))
    if estimator != "mss":
        raise ValueError(f"estimator must be 'mws' or 'mss', got {estimator!r}")
    if batch < 2:
        raise ValueError("minibatch stratified sampling needs batches of 2 or more")
    m = batch - 1
    eye = jnp.eye(batch, dtype=bool)
    nxt = jnp.roll(eye, 1, axis=1)  # [i, (i + 1) mod B]
    return jnp.log(jnp.where(eye, 1.0 / n, jnp.where(nxt, (n - m) / (n * m), 1.0 / m)))


def log_aggregate(z, mean, log_var, dataset_size: int, estimator: str = "mss") -> tuple[jax.Array, jax.Array]:
    """(log q(z_i), log prod_d q(z_id)), each [B], estimated on the batch whose posteriors are
    N(mean, diag exp(log_var)) [B, D] and whose samples are z [B, D]."""
    pair = pairwise_log_density(z, mean, log_var)
    w = log_weights(z.shape[0], dataset_size, estimator)
    log_qz = jax.nn.logsumexp(jnp.sum(pair, -1) + w, axis=1)
    log_prod = jnp.sum(jax.nn.logsumexp(pair + w[..., None], axis=1), -1)
    return log_qz, log_prod


def dip_covariance(mean: jax.Array, log_var: jax.Array, kind: str) -> jax.Array:
    """[D, D] Cov_q(z) over a batch: "i", Cov[mean(x)] (DIP-VAE-I); "ii", that plus E[diag exp(log_var)]
    (DIP-VAE-II, the covariance of the aggregate posterior by the law of total covariance)."""
    centred = mean - jnp.mean(mean, 0)
    cov = centred.T @ centred / mean.shape[0]
    if kind == "ii":
        cov = cov + jnp.diag(jnp.mean(jnp.exp(log_var), 0))
    elif kind != "i":
        raise ValueError(f"DIP-VAE kind must be 'i' or 'ii', got {kind!r}")
    return cov


def dip_penalty(cov: jax.Array, lambda_od: float, lambda_d: float) -> jax.Array:
    """lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2: pushes Cov_q(z) towards the identity."""
    diag = jnp.diag(cov)
    off = jnp.sum(cov * cov) - jnp.sum(diag * diag)
    return lambda_od * off + lambda_d * jnp.sum((diag - 1.0) ** 2)


def kernel(x: jax.Array, y: jax.Array, kind: str, scale: float) -> jax.Array:
    """[N, M] kernel matrix of samples x [N, D] and y [M, D], with C = 2 D scale^2 (the expected squared
    distance of two draws of N(0, scale^2 I)): "rbf" exp(-|x - y|^2 / C), "imq" C / (C + |x - y|^2)."""
    c = 2.0 * x.shape[-1] * scale * scale
    sq = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, -1)
    if kind == "rbf":
        return jnp.exp(-sq / c)
    if kind == "imq":
        return c / (c + sq)
    raise ValueError(f"kernel must be 'rbf' or 'imq', got {kind!r}")


def mmd(x: jax.Array, y: jax.Array, kind: str = "imq", scale: float = 1.0) -> jax.Array:
    """The unbiased estimate of MMD^2 between the distributions of samples x [N, D] and y [M, D]
    (N, M >= 2): the within-sample means leave out the diagonal (Gretton et al. 2012, eq. 3)."""
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel(x, x, kind, scale), kernel(y, y, kind, scale), kernel(x, y, kind, scale)
    within_x = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
    within_y = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return within_x + within_y - 2.0 * jnp.mean(kxy)
