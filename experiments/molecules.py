"""Conditional molecule generation on MOSES: a SMILES CVAE conditioned on logP, TPSA and molecular
weight (Lim et al. 2018), trained on the first N molecules of the MOSES training split.

    pip install -e ".[chem]" && pip install --no-deps molsets   # RDKit; MOSES's CSV files, offline
    python experiments/molecules.py [--train 30000] [--epochs 10] [--samples 2000] [--free-bits 0.1]
                                    [--word-dropout 0] [--workdir runs/molecules] [--name molecules]
                                    [--train-csv FILE --test-csv FILE]   # default: the molsets wheel's

Measures, on the MOSES test split and on samples drawn from the prior:
  * test -ELBO (KL, recon), active latent units and greedy reconstruction accuracy (exact strings, tokens);
  * validity, uniqueness and novelty of molecules drawn under the test molecules' own conditions;
  * conditional control: the correlation between the requested and the measured (RDKit) property
    of each valid sample, against the same with the requests shuffled (what an unconditional
    model would score), and the mean logP / TPSA / MW of samples drawn at low, middle and high targets.
Writes experiments/results/NAME.json.
"""

import argparse
import dataclasses
import time

import _shared
import jax
import numpy as np

from cvae_jax import molecules
from cvae_jax.apps import evaluate
from cvae_jax.data import smiles
from cvae_jax.molecules import chem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=30_000, help="training molecules (the first N of MOSES train)")
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2_000, help="molecules drawn for validity and control")
    parser.add_argument("--train-csv", help="training SMILES (default: MOSES train from the molsets wheel)")
    parser.add_argument("--test-csv", help="test SMILES (default: MOSES test from the molsets wheel)")
    parser.add_argument("--free-bits", type=float, default=0.1, help="KL floor per latent dimension, nats")
    parser.add_argument(
        "--word-dropout", type=float, default=0.0, help="share of previous tokens the decoder does not see in training"
    )
    parser.add_argument("--workdir", default="", help="save (and resume) the run's Orbax checkpoints here")
    parser.add_argument("--name", default="molecules", help="results file: experiments/results/NAME.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train_csv = args.train_csv or str(smiles.moses_csv("train"))
    test_csv = args.test_csv or str(smiles.moses_csv("test"))
    cfg = molecules.recipe(
        train_csv,
        test_csv,
        num_train=args.train,
        num_test=args.test,
        epochs=args.epochs,
        free_bits=args.free_bits,
        word_dropout=args.word_dropout,
        seed=args.seed,
    )
    start = time.perf_counter()
    data = molecules.prepare(cfg)
    prepare_seconds = time.perf_counter() - start
    model, state, history = molecules.train(cfg, data, workdir=args.workdir or None)
    params, key = state.params, jax.random.key(args.seed)

    # Samples under the conditions of real test molecules, and their measured properties.
    rows = np.random.default_rng(args.seed).choice(len(data.test["condition"]), args.samples)
    requested = data.test["properties"][rows]
    generated = molecules.generate(model, params, jax.random.fold_in(key, 1), data.test["condition"][rows], data.vocab)
    measured = chem.properties(generated, data.names)
    valid = ~np.isnan(measured).any(axis=1)
    shuffled = requested[np.random.default_rng(args.seed + 1).permutation(len(requested))]
    control = {}
    for i, name in enumerate(data.names):
        control[name] = {
            "pearson_r": float(np.corrcoef(requested[valid, i], measured[valid, i])[0, 1]),
            "pearson_r_shuffled": float(np.corrcoef(shuffled[valid, i], measured[valid, i])[0, 1]),
            "mae": float(np.mean(np.abs(requested[valid, i] - measured[valid, i]))),
            "mae_shuffled": float(np.mean(np.abs(shuffled[valid, i] - measured[valid, i]))),
        }
    # Posterior collapse: latent dimensions whose posterior mean varies across test molecules.
    condition = data.test["condition"] if model.conditional else None
    means, _ = model.apply(params, data.test["tokens"], condition, method=model.encode)
    active, _ = evaluate.active_units(np.asarray(means))
    levels = {}
    for i, name in enumerate(data.names):
        targets = np.percentile(data.train["properties"][:, i], [10, 50, 90])
        levels[name] = molecules.property_control(
            model, params, data, jax.random.fold_in(key, 10 + i), name, targets, num=args.samples // 4
        )
    result = {
        "config": dataclasses.asdict(cfg) | {"train": dataclasses.asdict(cfg.train)},
        "data": {
            "train_molecules": len(data.train_smiles),
            "test_molecules": len(data.test_smiles),
            "vocab_size": data.vocab.size,
            "length": data.length,
        },
        "prepare_seconds": round(prepare_seconds, 1),  # reading, tokenizing, RDKit properties
        "train_seconds": round(sum(row.get("seconds", 0.0) for row in history), 1),  # the epochs (+ compile)
        "history": [row for row in history if row["split"] in ("train", "test")],
        "active_units": int(active),
        "reconstruction": molecules.reconstruction(
            model, params, {k: v[:1000] for k, v in data.test.items()}, data.vocab
        ),
        "samples": chem.sample_metrics(generated, data.train_smiles),
        "control": control,
        "levels": levels,
        "examples": generated[:20],
    }
    _shared.save_json(args.name, result)
    final = [row for row in history if row["split"] == "test"][-1]
    print(
        f"test -ELBO {final['neg_elbo']:.2f} (recon {final['recon']:.2f}, KL {final['kl']:.2f}); active units "
        f"{active}/{cfg.latent_dim}; "
        f"reconstruction {result['reconstruction']}; samples {result['samples']}"
    )
    for name, c in control.items():
        print(
            f"{name}: r = {c['pearson_r']:.3f} (shuffled {c['pearson_r_shuffled']:.3f}), MAE {c['mae']:.2f} "
            f"(shuffled {c['mae_shuffled']:.2f}); by target: "
            + ", ".join(f"{r['target']:.2f} -> {r['mean']:.2f} (valid {r['validity']:.2f})" for r in levels[name])
        )


if __name__ == "__main__":
    main()
