"""Training objectives as per-example terms, reduced once.

Conventions (the same everywhere in the library, and impossible to change by accident):
  * recon  = -log p(x | z), summed over every data dimension (pixels and channels), in nats;
  * kl     = KL(q(z | x[, c]) || p(z[ | c])), summed over latent dimensions, in nats (analytic when
             the prior has a closed form, else the one-sample estimate log q(z|x) - log p(z));
  * neg_elbo = recon + kl, per example; the batch value is the mean over examples.
  * beta (and its schedules, and free bits) change the *training loss* only; `neg_elbo` is always
    the true (beta = 1) bound.
Summing over pixels but averaging over the batch is what makes the ELBO a bound on -log p(x) per
example; averaging over pixels instead silently rescales the KL by 1/D (a beta of 1/784 on MNIST).

Every loss here is a pure function loss(params, batch, key, step=0) -> (scalar, metrics).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from cvae_jax.config import ConfigError, TrainConfig
from cvae_jax.core import aggregate, critics, distributions, likelihoods, posteriors, priors
from cvae_jax.core.models import VAE
from cvae_jax.core.registry import Registry

# Purposes for keys derived inside a step: fold_in(step_key, purpose).
BINARIZE, LATENT, PRIOR_LATENT, PERMUTE, RESTART = 0, 1, 2, 3, 4

Terms = dict[str, jax.Array]


def condition_of(batch: dict[str, jax.Array], num_classes: int) -> jax.Array | None:
    """The conditioning vector of a batch: batch["condition"] if given, else one-hot batch["label"]."""
    if "condition" in batch:
        return batch["condition"].astype(jnp.float32)
    return jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)


def inputs_of(model: VAE, batch, key, num_classes: int, binarize: bool):
    x = batch["image"]
    if jnp.issubdtype(x.dtype, jnp.integer):  # uint8 0-255 images held so to fit in memory (sprites)
        x = x.astype(jnp.float32) / 255.0
    if binarize:
        x = distributions.bernoulli(jax.random.fold_in(key, BINARIZE), x).astype(x.dtype)
    condition = condition_of(batch, num_classes) if model.conditional else None
    return x, condition


def _latents(key, mean, log_var, num_samples: int):
    """num_samples reparameterized draws [K, B, D]; the same key gives the same first draws for any K."""
    eps = distributions.normal(jax.random.fold_in(key, LATENT), (num_samples, *mean.shape), mean.dtype)
    return mean + jnp.exp(0.5 * log_var) * eps


def make_elbo_terms(
    model: VAE, *, num_classes: int, binarize: bool = False, analytic_kl: bool | None = None
) -> Callable[..., Terms]:
    """Returns terms(params, batch, key) -> {"recon", "kl", "neg_elbo"} of shape [B] (+ "kl_per_dim" [B, D]
    for a standard-normal prior). `analytic_kl=None` uses the prior's closed form when it has one."""
    gaussian = posteriors.is_gaussian(getattr(model, "posterior", None))
    use_analytic = gaussian and (priors.has_analytic_kl(model.prior) if analytic_kl is None else analytic_kl)

    def terms(params, batch, key) -> Terms:
        x, condition = inputs_of(model, batch, key, num_classes, binarize)
        if not gaussian:  # any other posterior: its own sample and log-density; the KL in closed form
            # where the posterior has one against the prior (analytic_kl=False: always Monte Carlo)
            mean, log_var, context = model.apply(params, x, condition, method=model.encode_full)
            z, log_q = posteriors.sample(model, params, jax.random.fold_in(key, LATENT), mean, log_var, 1, context)
            z, log_q = z[0], log_q[0]
            recon = -likelihoods.log_likelihood(x, model.apply(params, z, condition, method=model.decode))
            kl = posteriors.analytic_kl(model, mean, log_var, context) if analytic_kl is not False else None
            if kl is None:
                kl = log_q - model.apply(params, z, condition, method=model.prior_log_prob)
            return elbo_terms(model, recon, kl, mean, log_var)
        mean, log_var = model.apply(params, x, condition, method=model.encode)
        z = _latents(key, mean, log_var, 1)[0]
        recon = -likelihoods.log_likelihood(x, model.apply(params, z, condition, method=model.decode))
        if use_analytic:
            kl = model.apply(params, mean, log_var, z, condition, method=model.kl_to_prior)
        else:
            log_prior = model.apply(params, z, condition, method=model.prior_log_prob)
            kl = distributions.diag_gaussian_log_prob(z, mean, log_var) - log_prior
        return elbo_terms(model, recon, kl, mean, log_var)

    return terms


def elbo_terms(model: VAE, recon: jax.Array, kl: jax.Array, mean: jax.Array, log_var: jax.Array) -> Terms:
    """{"recon", "kl", "neg_elbo"} [B], plus "kl_per_dim" [B, D] when the prior is N(0, I) (what free bits
    and the per-dimension evaluation read), and "bits_per_dim" (-ELBO / (dims ln 2)) for a discrete
    likelihood of 8-bit data. Shared by every model's terms function."""
    out = {"recon": recon, "kl": kl, "neg_elbo": recon + kl}
    decoder = getattr(model, "decoder", None)
    if getattr(decoder, "likelihood", None) == "discretized_logistic":
        out["bits_per_dim"] = (recon + kl) / (math.prod(decoder.data_shape) * math.log(2.0))
    if isinstance(model.prior, priors.StandardNormal) and posteriors.is_gaussian(getattr(model, "posterior", None)):
        out["kl_per_dim"] = 0.5 * (jnp.exp(log_var) + mean * mean - 1.0 - log_var)
    return out


def log_weight_parts(model: VAE, params, x, condition, mean, log_var, z, log_q=None):
    """(log p(x | z_k), log p(z_k), log q(z_k | x)), each [K, B], for latents z [K, B, D] of a batch x
    [B, ...]; `log_q`, when the posterior gave it with z, else the diagonal Gaussian's."""
    k, b, d = z.shape
    flat_z = z.reshape(k * b, d)
    flat_c = None if condition is None else jnp.tile(condition, (k, 1))
    # The decoder runs on all K * B latents at once; its outputs are scored against x broadcast over
    # the K axis (x itself is never copied K times).
    decoded = model.apply(params, flat_z, flat_c, method=model.decode)
    decoded = {name: value.reshape(k, b, *value.shape[1:]) for name, value in decoded.items()}
    log_lik = likelihoods.log_likelihood(x, decoded)
    log_prior = model.apply(params, flat_z, flat_c, method=model.prior_log_prob)
    if log_q is None:
        log_q = distributions.diag_gaussian_log_prob(z, mean, log_var)
    return log_lik, log_prior.reshape(k, b), log_q


def importance_log_weights(model: VAE, params, batch, key, *, num_classes: int, num_samples: int, binarize: bool):
    """(log w, log p(x | z), log p(z), log q(z | x)), each [K, B], of K = num_samples posterior samples of
    each example of a batch: log w = log p(x, z_k) - log q(z_k | x), with the model's own posterior."""
    x, condition = inputs_of(model, batch, key, num_classes, binarize)
    if posteriors.is_gaussian(getattr(model, "posterior", None)):
        mean, log_var = model.apply(params, x, condition, method=model.encode)
        z, log_q = _latents(key, mean, log_var, num_samples), None  # [K, B, D]
    else:
        z, log_q, mean, log_var = posteriors.encode_and_sample(
            model, params, jax.random.fold_in(key, LATENT), x, condition, num_samples
        )
    log_lik, log_prior, log_q = log_weight_parts(model, params, x, condition, mean, log_var, z, log_q)
    return log_lik + log_prior - log_q, log_lik, log_prior, log_q


def make_iwae_terms(model: VAE, *, num_classes: int, num_samples: int, binarize: bool = False):
    """Returns terms(params, batch, key) -> {"neg_iwae", "neg_elbo", "recon", "kl"} of shape [B].

    neg_iwae = -log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k ~ q (Burda et al. 2015). neg_elbo, recon and
    kl here are the K-sample Monte Carlo averages. With K = 1 neg_iwae equals the one-sample ELBO."""

    def terms(params, batch, key) -> Terms:
        log_w, log_lik, log_prior, log_q = importance_log_weights(
            model, params, batch, key, num_classes=num_classes, num_samples=num_samples, binarize=binarize
        )
        neg_iwae = -(jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples))
        return {
            "neg_iwae": neg_iwae,
            "neg_elbo": -jnp.mean(log_w, 0),
            "recon": -jnp.mean(log_lik, 0),
            "kl": jnp.mean(log_q - log_prior, 0),
        }

    return terms


def kl_period(cfg: TrainConfig, total_steps: int) -> float | None:
    """The length in steps of one KL cycle (cyclical schedule; None for the others): cfg.cycle_steps,
    or with 0 there, the run's total_steps / num_cycles."""
    if cfg.kl_schedule != "cyclical":
        return None
    return float(cfg.cycle_steps) if cfg.cycle_steps > 0 else max(1.0, total_steps / cfg.num_cycles)


def kl_weight(cfg: TrainConfig, step, total_steps: int) -> jax.Array:
    """beta at `step` under cfg.kl_schedule: constant, linear warm-up, or cyclical (Fu et al. 2019)."""
    step = jnp.asarray(step, jnp.float32)
    if cfg.kl_schedule == "linear":
        return cfg.beta * jnp.minimum(1.0, step / cfg.warmup_steps)
    if cfg.kl_schedule == "cyclical":
        period = kl_period(cfg, total_steps)
        phase = jnp.mod(step, period) / period
        return cfg.beta * jnp.minimum(1.0, phase / 0.5)
    return jnp.asarray(cfg.beta, jnp.float32)


def free_bits_kl(terms: Terms, free_bits: float) -> jax.Array:
    """The KL term of the loss with a floor of `free_bits` nats per latent dimension (batch-averaged,
    Kingma et al. 2016). Without per-dimension KL (non-factorized priors) the floor applies to the total."""
    if "kl_per_dim" in terms:
        return jnp.sum(jnp.maximum(jnp.mean(terms["kl_per_dim"], 0), free_bits))
    return jnp.maximum(jnp.mean(terms["kl"]), free_bits)


def _scalars(terms: Terms) -> dict[str, jax.Array]:
    return {name: jnp.mean(v) for name, v in terms.items() if v.ndim == 1}


def make_elbo_loss(
    terms_fn: Callable[..., Terms], *, beta: float = 1.0, cfg: TrainConfig | None = None, total_steps: int = 1
):
    """Returns loss(params, batch, key, step=0) -> (scalar, batch-mean metrics) for the beta-ELBO,
    with cfg's KL schedule and free bits when `cfg` is given (else a constant `beta`)."""

    def loss(params, batch, key, step=0):
        terms = terms_fn(params, batch, key)
        weight = kl_weight(cfg, step, total_steps) if cfg is not None else jnp.asarray(beta, jnp.float32)
        kl = free_bits_kl(terms, cfg.free_bits) if cfg is not None and cfg.free_bits > 0 else jnp.mean(terms["kl"])
        value = jnp.mean(terms["recon"]) + weight * kl
        metrics = _scalars(terms)
        metrics.update(loss=value, beta=weight)
        return value, metrics

    return loss


def make_iwae_loss(terms_fn: Callable[..., Terms]):
    """Returns loss(params, batch, key, step=0) -> (mean neg_iwae, metrics)."""

    def loss(params, batch, key, step=0):
        del step
        terms = terms_fn(params, batch, key)
        value = jnp.mean(terms["neg_iwae"])
        return value, {**_scalars(terms), "loss": value}

    return loss


def make_hybrid_loss(
    model: VAE, terms_fn: Callable[..., Terms], *, num_classes: int, alpha: float, binarize: bool = False
):
    """Sohn et al. (2015): alpha * (-ELBO_CVAE) + (1 - alpha) * (-log p(x | z, c)), z ~ p(z | c) (GSNN).

    The GSNN term trains the decoder on latents drawn from the (conditional) prior, as at test time."""

    def loss(params, batch, key, step=0):
        del step
        terms = terms_fn(params, batch, key)
        x, condition = inputs_of(model, batch, key, num_classes, binarize)
        z = model.apply(params, jax.random.fold_in(key, PRIOR_LATENT), x.shape[0], condition, method=model.prior_sample)
        gsnn = -likelihoods.log_likelihood(x, model.apply(params, z, condition, method=model.decode))
        value = alpha * jnp.mean(terms["neg_elbo"]) + (1.0 - alpha) * jnp.mean(gsnn)
        return value, {**_scalars(terms), "gsnn_recon": jnp.mean(gsnn), "loss": value}

    return loss


def make_hierarchical_terms(model, *, num_classes: int, binarize: bool = False):
    """terms(params, batch, key) -> {"recon", "kl", "neg_elbo"[, "bits_per_dim"]} [B] of a hierarchical
    VAE (cvae_jax.core.hierarchical): the KL summed over its groups."""

    def terms(params, batch, key) -> Terms:
        x, condition = inputs_of(model, batch, key, num_classes, binarize)
        recon, kl = model.apply(params, x, condition, jax.random.fold_in(key, LATENT), method=model.elbo)
        out = {"recon": recon, "kl": kl, "neg_elbo": recon + kl}
        if model.likelihood == "discretized_logistic":
            out["bits_per_dim"] = (recon + kl) / (math.prod(model.data_shape) * math.log(2.0))
        return out

    return terms


# ---------------------------------------------------------------- registry: train.objective -> factory
# factory(model, cfg: TrainConfig, *, num_classes, binarize, total_steps) -> (terms, loss): `terms`
# (params, batch, key) -> per-example terms {name: [B]} (what evaluation reports: the ELBO terms for
# every objective here), `loss` (params, batch, key, step) -> (scalar, metrics) (what is trained).
REGISTRY: Registry[Callable] = Registry("objective", "train.objective", "cvae_jax.core.objectives")
register = REGISTRY.register
names = REGISTRY.names


@register("elbo")
def _elbo(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
    """The beta-ELBO with cfg's KL schedule and free bits."""
    terms = make_elbo_terms(model, num_classes=num_classes, binarize=binarize)
    return terms, make_elbo_loss(terms, cfg=cfg, total_steps=total_steps)


@register("iwae")
def _iwae(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
    """The importance-weighted bound with cfg.iwae_samples samples (Burda et al. 2015)."""
    del total_steps
    iwae = make_iwae_terms(model, num_classes=num_classes, num_samples=cfg.iwae_samples, binarize=binarize)
    return make_elbo_terms(model, num_classes=num_classes, binarize=binarize), make_iwae_loss(iwae)


@register("hybrid")
def _hybrid(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
    """alpha (-ELBO) + (1 - alpha) GSNN (Sohn et al. 2015), alpha = cfg.hybrid_alpha; CVAE only."""
    del total_steps
    terms = make_elbo_terms(model, num_classes=num_classes, binarize=binarize)
    return terms, make_hybrid_loss(model, terms, num_classes=num_classes, alpha=cfg.hybrid_alpha, binarize=binarize)


def _only_elbo_weights(cfg: TrainConfig, objective: str, reads_beta: bool = True) -> None:
    """Objectives with their own weights read neither beta's schedules nor free bits: refuse them."""
    if cfg.kl_schedule != "constant" or cfg.free_bits > 0:
        raise ConfigError(
            f"train.objective={objective} has its own weights; train.kl_schedule and train.free_bits are the "
            "ELBO's: leave them constant and 0"
        )
    if not reads_beta and cfg.beta != 1.0:
        raise ConfigError(f"train.objective={objective} does not read train.beta: leave it 1")


def _gaussian_latents(model, params, x, condition, key):
    """(z [B, D], mean, log_var) of the diagonal Gaussian posterior; a ConfigError for other posteriors."""
    if not posteriors.is_gaussian(getattr(model, "posterior", None)):
        raise ConfigError("this objective estimates q(z) from the encoder's diagonal Gaussians: use that posterior")
    mean, log_var = model.apply(params, x, condition, method=model.encode)
    return _latents(key, mean, log_var, 1)[0], mean, log_var


def make_tc_terms(model: VAE, *, num_classes: int, dataset_size: int, estimator: str, binarize: bool = False):
    """terms(params, batch, key) -> the ELBO's terms plus the decomposition of its KL (Chen et al. 2018,
    eq. 2), each a one-sample estimate [B] with log q(z) from the batch: "mi" (index-code mutual
    information, log q(z|x) - log q(z)), "tc" (total correlation, log q(z) - sum_d log q(z_d)) and
    "dw_kl" (dimension-wise KL, sum_d log q(z_d) - log p(z))."""

    def terms(params, batch, key) -> Terms:
        x, condition = inputs_of(model, batch, key, num_classes, binarize)
        z, mean, log_var = _gaussian_latents(model, params, x, condition, key)
        recon = -likelihoods.log_likelihood(x, model.apply(params, z, condition, method=model.decode))
        log_prior = model.apply(params, z, condition, method=model.prior_log_prob)
        log_q = distributions.diag_gaussian_log_prob(z, mean, log_var)
        log_qz, log_prod = aggregate.log_aggregate(z, mean, log_var, dataset_size, estimator)
        kl = model.apply(params, mean, log_var, z, condition, method=model.kl_to_prior)  # analytic where it can be
        out = elbo_terms(model, recon, kl, mean, log_var)
        out.update(mi=log_q - log_qz, tc=log_qz - log_prod, dw_kl=log_prod - log_prior)
        return out

    return terms


@register("beta_tcvae")
def _beta_tcvae(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
    """recon + tc_alpha MI + beta TC + tc_gamma dimension-wise KL (Chen et al. 2018, eq. 4); log q(z) by
    cfg.tc_estimator over a data set of (steps per epoch x batch size) examples."""
    _only_elbo_weights(cfg, "beta_tcvae")
    dataset_size = max(total_steps // cfg.epochs, 1) * cfg.batch_size
    terms = make_tc_terms(
        model, num_classes=num_classes, dataset_size=dataset_size, estimator=cfg.tc_estimator, binarize=binarize
    )

    def loss(params, batch, key, step=0):
        del step
        t = terms(params, batch, key)
        value = jnp.mean(t["recon"] + cfg.tc_alpha * t["mi"] + cfg.beta * t["tc"] + cfg.tc_gamma * t["dw_kl"])
        return value, {**_scalars(t), "loss": value}

    return terms, loss


def _with_batch_term(terms_fn: Callable[..., Terms], name: str, penalty: Callable) -> Callable[..., Terms]:
    """terms_fn's terms plus `name`: the batch-level `penalty(params, batch, key)` repeated per example
    (so that evaluation reports its mean over batches)."""

    def terms(params, batch, key) -> Terms:
        out = terms_fn(params, batch, key)
        value = penalty(params, batch, key)
        return {**out, name: jnp.broadcast_to(value, out["neg_elbo"].shape)}

    return terms


def _dip(kind: str):
    def factory(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
        """The beta-ELBO (with cfg's KL schedule and free bits) + the DIP-VAE penalty on Cov_q(z)."""

        def penalty(params, batch, key):
            x, condition = inputs_of(model, batch, key, num_classes, binarize)
            _, mean, log_var = _gaussian_latents(model, params, x, condition, key)
            cov = aggregate.dip_covariance(mean, log_var, kind)
            return aggregate.dip_penalty(cov, cfg.dip_lambda_od, cfg.dip_lambda_d)

        elbo = make_elbo_terms(model, num_classes=num_classes, binarize=binarize)
        terms = _with_batch_term(elbo, "dip_penalty", penalty)
        elbo_loss = make_elbo_loss(terms, cfg=cfg, total_steps=total_steps)

        def loss(params, batch, key, step=0):
            value, metrics = elbo_loss(params, batch, key, step)
            value = value + metrics["dip_penalty"]
            return value, {**metrics, "loss": value}

        return terms, loss

    return factory


register("dip_vae_i")(_dip("i"))
register("dip_vae_ii")(_dip("ii"))


def _mmd_terms(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool) -> Callable[..., Terms]:
    """The ELBO's terms plus "mmd": MMD^2 between the batch's posterior samples and as many prior draws."""

    def penalty(params, batch, key):
        x, condition = inputs_of(model, batch, key, num_classes, binarize)
        z, *_ = posteriors.encode_and_sample(model, params, jax.random.fold_in(key, LATENT), x, condition, 1)
        drawn = model.apply(
            params, jax.random.fold_in(key, PRIOR_LATENT), x.shape[0], condition, method=model.prior_sample
        )
        return aggregate.mmd(z[0], drawn, cfg.mmd_kernel, cfg.mmd_scale)

    return _with_batch_term(make_elbo_terms(model, num_classes=num_classes, binarize=binarize), "mmd", penalty)


@register("info_vae")
def _info_vae(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
    """InfoVAE (Zhao et al. 2017, eq. 6 with the MMD divergence): recon + (1 - info_alpha) KL +
    (info_alpha + mmd_weight - 1) MMD."""
    del total_steps
    _only_elbo_weights(cfg, "info_vae")
    terms = _mmd_terms(model, cfg, num_classes=num_classes, binarize=binarize)
    kl_weight_, mmd_weight = 1.0 - cfg.info_alpha, cfg.info_alpha + cfg.mmd_weight - 1.0

    def loss(params, batch, key, step=0):
        del step
        t = terms(params, batch, key)
        value = jnp.mean(t["recon"] + kl_weight_ * t["kl"] + mmd_weight * t["mmd"])
        return value, {**_scalars(t), "loss": value}

    return terms, loss


@register("wae")
def _wae(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
    """WAE-MMD (Tolstikhin et al. 2018, algorithm 2, with the stochastic encoder's samples):
    recon + mmd_weight MMD; no KL."""
    del total_steps
    _only_elbo_weights(cfg, "wae")
    terms = _mmd_terms(model, cfg, num_classes=num_classes, binarize=binarize)

    def loss(params, batch, key, step=0):
        del step
        t = terms(params, batch, key)
        value = jnp.mean(t["recon"] + cfg.mmd_weight * t["mmd"])
        return value, {**_scalars(t), "loss": value}

    return terms, loss


def make_miwae_terms(model: VAE, *, num_classes: int, groups: int, num_samples: int, binarize: bool = False):
    """terms(params, batch, key) -> {"neg_miwae"} [B]: minus the mean over `groups` independent
    `num_samples`-sample importance-weighted bounds (Rainforth et al. 2018, the MIWAE of section 4).
    groups = 1 is the IWAE; num_samples = 1 the mean of `groups` one-sample ELBOs."""

    def terms(params, batch, key) -> Terms:
        log_w, *_ = importance_log_weights(
            model, params, batch, key, num_classes=num_classes, num_samples=groups * num_samples, binarize=binarize
        )
        bounds = jax.nn.logsumexp(log_w.reshape(groups, num_samples, -1), axis=1) - math.log(num_samples)
        return {"neg_miwae": -jnp.mean(bounds, 0)}

    return terms


@register("miwae")
def _miwae(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
    """MIWAE(miwae_groups, iwae_samples): the mean of miwae_groups importance-weighted bounds of
    iwae_samples samples each (Rainforth et al. 2018)."""
    del total_steps
    _only_elbo_weights(cfg, "miwae")
    miwae = make_miwae_terms(
        model, num_classes=num_classes, groups=cfg.miwae_groups, num_samples=cfg.iwae_samples, binarize=binarize
    )

    def loss(params, batch, key, step=0):
        del step
        value = jnp.mean(miwae(params, batch, key)["neg_miwae"])
        return value, {"neg_miwae": value, "loss": value}

    return make_elbo_terms(model, num_classes=num_classes, binarize=binarize), loss


@register("factor_vae")
def _factor_vae(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
    """FactorVAE (Kim & Mnih 2018, eq. 2 and algorithm 2): the ELBO + gamma TC(z), TC estimated by the
    discriminator's log D(z) / (1 - D(z)) on the batch's posterior samples; the discriminator learns
    in the same step to tell those from their dimension-wise permutation (its cross-entropy is added to
    the loss, with each part's gradient stopped where it would reach the other's parameters)."""
    del total_steps
    _only_elbo_weights(cfg, "factor_vae", reads_beta=False)
    if model.critic is None:
        raise ConfigError("train.objective=factor_vae needs the model built with its discriminator (attach_critic)")

    def parts(params, batch, key):
        x, condition = inputs_of(model, batch, key, num_classes, binarize)
        z, mean, log_var = _gaussian_latents(model, params, x, condition, key)
        recon = -likelihoods.log_likelihood(x, model.apply(params, z, condition, method=model.decode))
        kl = model.apply(params, mean, log_var, z, condition, method=model.kl_to_prior)  # analytic where it can be
        out = elbo_terms(model, recon, kl, mean, log_var)
        logits = model.apply(critics.freeze(params), z, method=model.critic_logits)
        out["tc_critic"] = logits[:, 0] - logits[:, 1]
        return out, jax.lax.stop_gradient(z)

    def terms(params, batch, key) -> Terms:
        return parts(params, batch, key)[0]

    def loss(params, batch, key, step=0):
        del step
        t, z = parts(params, batch, key)
        shuffled = critics.permute_dims(jax.random.fold_in(key, PERMUTE), z)
        real = model.apply(params, z, method=model.critic_logits)
        permuted = model.apply(params, shuffled, method=model.critic_logits)
        critic = 0.5 * jnp.mean(critics.cross_entropy(real, 0) + critics.cross_entropy(permuted, 1))
        vae = jnp.mean(t["neg_elbo"] + cfg.factor_gamma * t["tc_critic"])
        accuracy = 0.5 * jnp.mean((real[:, 0] > real[:, 1]) + (permuted[:, 1] > permuted[:, 0]))
        return vae + critic, {**_scalars(t), "loss": vae, "critic_loss": critic, "critic_accuracy": accuracy}

    return terms, loss


_factor_vae.critic = lambda cfg: critics.Discriminator(tuple(cfg.critic_hidden))


def attach_critic(model: VAE, cfg: TrainConfig) -> VAE:
    """`model` with the module its objective trains beside it (FactorVAE's discriminator), if any."""
    make = getattr(REGISTRY.get(cfg.objective), "critic", None) if cfg.objective in REGISTRY.names() else None
    return model if make is None or getattr(model, "hierarchical", False) else model.clone(critic=make(cfg))


def critic_optimizer(cfg: TrainConfig):
    """The critic's own optimizer (Adam, betas 0.5 and 0.9, as FactorVAE's), or None without a critic."""
    import optax

    if cfg.objective not in REGISTRY.names() or getattr(REGISTRY.get(cfg.objective), "critic", None) is None:
        return None
    return optax.adam(cfg.critic_learning_rate, b1=0.5, b2=0.9)


def make_vq_terms(model, *, num_classes: int, binarize: bool = False):
    """terms(params, batch, key) -> [B] each: "recon" (-log p(x | z_q)), "kl" (grid cells x log K: the
    KL of the one-hot posterior to a uniform prior over codes), "neg_elbo", "commitment" (|z_e -
    sg(z_q)|^2 summed), and the batch's code "perplexity" and "dead_codes"; plus, under "_ema", the
    codebook's moving-average targets (for the loss; not a per-example term)."""
    from cvae_jax.core import vqvae

    def terms(params, batch, key) -> Terms:
        x, _ = inputs_of(model, batch, key, num_classes, binarize)
        z_e = model.apply(params, x, method=model.encode_grid)
        codes = model.apply(params, z_e, method=model.nearest)
        z_q = model.apply(params, method=model.codebook)[codes]
        straight = z_e + jax.lax.stop_gradient(z_q - z_e)  # the decoder's gradient passes to the encoder
        recon = -likelihoods.log_likelihood(x, model.apply(params, straight, method=model.decode_grid))
        cells = math.prod(model.grid)
        kl = jnp.full(recon.shape, cells * math.log(model.codebook_size))
        commitment = jnp.sum((z_e - jax.lax.stop_gradient(z_q)) ** 2, axis=(1, 2, 3))
        perplexity, dead = vqvae.usage(codes, model.codebook_size)
        out = {"recon": recon, "kl": kl, "neg_elbo": recon + kl, "commitment": commitment}
        out.update(
            {name: jnp.broadcast_to(v, recon.shape) for name, v in (("perplexity", perplexity), ("dead_codes", dead))}
        )
        if model.likelihood == "discretized_logistic":
            out["bits_per_dim"] = (recon + kl) / (math.prod(model.data_shape) * math.log(2.0))
        return out, vqvae.ema_targets(model, params, z_e, codes, jax.random.fold_in(key, RESTART))

    return terms


def make_objective(model: VAE, cfg: TrainConfig, *, num_classes: int, binarize: bool, total_steps: int):
    """(eval terms, training loss) of the objective registered as cfg.objective. A hierarchical VAE
    trains on its own ELBO terms, a VQ-VAE on its reconstruction, commitment and codebook averages."""
    if getattr(model, "vector_quantized", False):
        from cvae_jax.core import vqvae

        vq = make_vq_terms(model, num_classes=num_classes, binarize=binarize)

        def loss(params, batch, key, step=0):
            del step
            t, targets = vq(params, batch, key)
            value = jnp.mean(t["recon"]) + model.commitment * jnp.mean(t["commitment"])
            return value + vqvae.ema_gradient(params["codebook"], targets), {**_scalars(t), "loss": value}

        return (lambda params, batch, key: vq(params, batch, key)[0]), loss
    if getattr(model, "hierarchical", False):
        terms = make_hierarchical_terms(model, num_classes=num_classes, binarize=binarize)
        return terms, make_elbo_loss(terms, cfg=cfg, total_steps=total_steps)
    try:
        factory = REGISTRY.get(cfg.objective)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return factory(model, cfg, num_classes=num_classes, binarize=binarize, total_steps=total_steps)
