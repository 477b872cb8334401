"""The models researchers compare, side by side on the embedded digits, same architecture (the default
784-512-512 MLP, latent 16) and budget for each: test −ELBO, importance-sampled NLL (K samples), the
Fréchet judge distance of 1,000 samples to the 1,000 test images (features of the independent judge's
penultimate layer; not Inception FID), active units, and training time against the plain VAE's. The
default VAE is also sampled through a Gaussian mixture fitted to its training codes (`--sampler gmm`),
and the default CVAE's samples are judged for their class (conditional accuracy).

    python experiments/models_table.py [--epochs 50] [--k 1000] [--seeds 0 1 2]
    python experiments/models_table.py --vqvae [--epochs 50] [--seeds 0 1 2]

Every row is trained once per seed, for a fixed number of epochs (nothing is selected). Writes
experiments/results/models.json (each seed's rows and their spread); experiments/README.md reports
the mean ± std. `--vqvae` measures the two-stage VQ-VAE (`model.architecture=vqvae`, then a causal
transformer over its codes, `--task code_prior`, for as many epochs) into models_vqvae.json, a row of
the same table: its test −ELBO column is the two-stage bound −log p(x | z_q(x)) − log p(z_q(x)), its
samples are decoded from codes the prior draws, and its train time is both stages'.
"""

import argparse
import tempfile
import time
from pathlib import Path

import _shared
import jax
import numpy as np

from cvae_jax.apps import evaluate, frechet, inference, samplers
from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import images as data
from cvae_jax.tasks import code_prior
from cvae_jax.tasks.images import train_and_evaluate
from cvae_jax.training.trainer import fit

# (row, model kind, overrides): each a config, nothing else.
RUNS = [
    ("VAE (ELBO)", "vae", []),
    ("β-VAE, β = 4", "vae", ["train.beta=4"]),
    ("β-TCVAE, β = 6", "vae", ["train.objective=beta_tcvae", "train.beta=6"]),
    ("FactorVAE, γ = 10", "vae", ["train.objective=factor_vae", "train.factor_gamma=10"]),
    ("DIP-VAE-I", "vae", ["train.objective=dip_vae_i"]),
    ("DIP-VAE-II", "vae", ["train.objective=dip_vae_ii", "train.dip_lambda_od=10", "train.dip_lambda_d=10"]),
    ("InfoVAE (MMD), λ = 1000", "vae", ["train.objective=info_vae", "train.mmd_weight=1000"]),
    ("WAE-MMD, λ = 100", "vae", ["train.objective=wae", "train.mmd_weight=100"]),
    ("MIWAE, M = 2, K = 5", "vae", ["train.objective=miwae", "train.miwae_groups=2", "train.iwae_samples=5"]),
    ("VAE, full-covariance posterior", "vae", ["model.posterior=full_covariance"]),
    ("VAE, IAF posterior (2 steps)", "vae", ["model.posterior=iaf"]),
    ("CVAE (ELBO)", "cvae", []),
]


VQVAE = ("VQ-VAE + code prior (two-stage bound)", "vae", ["model.architecture=vqvae"])


def vqvae_row(dataset, judge, real, seed: int, epochs: int) -> dict:
    """The two-stage VQ-VAE of one seed: both stages trained in a temporary folder, then scored."""
    name, kind, overrides = VQVAE
    cfg = apply_overrides(get_config(kind), [f"train.epochs={epochs}", f"seed={seed}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        vq_dir, prior_dir = Path(tmp) / "vq", Path(tmp) / "prior"
        start = time.perf_counter()
        vq_run = train_and_evaluate(cfg, vq_dir, dataset=dataset, progress=False)
        vq_seconds = time.perf_counter() - start
        settings = [f"data.vqvae={vq_dir}", f"train.epochs={epochs}", f"seed={seed}"]
        task = code_prior.CodePriorTask(code_prior.CodePriorTask.make_config("default", settings))
        start = time.perf_counter()
        fit(task, prior_dir, progress=False)
        prior_seconds = time.perf_counter() - start
        prior, prior_params, _, vq = code_prior.load_prior(prior_dir)
        bound = code_prior.two_stage(vq, prior, prior_params, dataset.test.images)
        key = jax.random.fold_in(jax.random.key(seed), 17)
        drawn = code_prior.draw(vq, prior, prior_params, key, len(dataset.test))
        tests = [e for e in vq_run.history if e["split"] == "test"]
    return {
        "run": name,
        "kind": kind,
        "overrides": overrides,
        "train_seconds": round(vq_seconds + prior_seconds, 1),
        "train_seconds_vqvae": round(vq_seconds, 1),
        "train_seconds_prior": round(prior_seconds, 1),
        "neg_elbo": bound["nll_bound"],
        "recon": bound["recon"],
        "prior_nll": bound["prior_nll"],
        "bits_per_dim": bound["bits_per_dim"],
        "perplexity": tests[-1]["perplexity"],
        "codebook_size": vq_run.model.codebook_size,
        "code_cells": int(np.prod(vq_run.model.grid)),
        "frechet_judge": frechet.frechet_distance(real, judge.features(drawn)),
        "num_examples": len(dataset.test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--rows", help="comma-separated row numbers to run (default: all)")
    parser.add_argument("--vqvae", action="store_true", help="the two-stage VQ-VAE row, into models_vqvae.json")
    _shared.add_seed_arguments(parser)
    args = parser.parse_args()
    dataset = data.load_npz(data.embedded_path())
    if args.vqvae:

        def measure_vqvae(seed: int) -> dict:
            judge = _shared.judge(dataset, seed)
            row = vqvae_row(dataset, judge, judge.features(dataset.test.images), seed, args.epochs)
            print(f"| {row['run']} | {row['neg_elbo']:.2f} | {row['frechet_judge']:.2f} | {row['train_seconds']} s |")
            return {"rows": [row]}

        _shared.over_seeds("models_vqvae", _shared.seeds_of(args), measure_vqvae, epochs=args.epochs)
        return
    runs = [RUNS[int(i)] for i in args.rows.split(",")] if args.rows else RUNS
    test = dataset.test

    def measure(seed: int) -> dict:
        judge = _shared.judge(dataset, seed)
        real = judge.features(test.images)
        rows = []
        for name, kind, overrides in runs:
            cfg = apply_overrides(get_config(kind), [f"train.epochs={args.epochs}", f"seed={seed}", *overrides])
            start = time.perf_counter()
            run = train_and_evaluate(cfg, None, dataset=dataset, progress=False)
            train_s = time.perf_counter() - start
            params, key = run.state.params, jax.random.fold_in(jax.random.key(seed), 17)
            result = evaluate.evaluate_model(run.model, params, cfg, dataset, num_importance_samples=args.k, seed=seed)
            condition = inference.condition_for(
                run.model, test.labels if kind == "cvae" else None, dataset.num_classes, len(test)
            )
            drawn = np.asarray(inference.sample(run.model, params, key, len(test), condition))
            row = {"run": name, "kind": kind, "overrides": overrides, "train_seconds": round(train_s, 1), **result}
            row["frechet_judge"] = frechet.frechet_distance(real, judge.features(drawn))
            if kind == "vae" and not overrides:  # the post-hoc sampler against the prior
                codes = samplers.training_codes(run.model, params, run.dataset.train.images)
                z = samplers.sample_gmm(samplers.fit_gmm(codes, 10), seed, len(test))
                drawn = np.asarray(inference.decode_mean(run.model, params, z))
                row["frechet_judge_gmm"] = frechet.frechet_distance(real, judge.features(drawn))
            if kind == "cvae":
                row["conditional_accuracy"], _ = evaluate.conditional_accuracy(
                    judge, run.model, params, key, dataset.num_classes
                )
            row.pop("kl_per_dim", None)
            rows.append(row)
            print(
                f"| {name} | {row['neg_elbo']:.2f} | {row['nll']:.2f} | {row['frechet_judge']:.2f} "
                f"| {row['active_units']}/{row['latent_dim']} | {train_s:.0f} s |",
                flush=True,
            )
        return {"rows": rows}

    _shared.over_seeds("models", _shared.seeds_of(args), measure, epochs=args.epochs, num_importance_samples=args.k)


if __name__ == "__main__":
    main()
