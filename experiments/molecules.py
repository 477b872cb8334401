"""Conditional molecule generation at the MOSES standard: a SMILES or SELFIES CVAE conditioned on logP,
TPSA and molecular weight (Lim et al. 2018), scored by the MOSES metric suite (valid, unique@1k/10k,
novelty against MOSES's full 1.58M training molecules, IntDiv, SNN/Frag/Scaf against the test and
scaffold-test sets, Filters, FCD with the [fcd] extra) on samples drawn under the properties of
random test molecules, and by how well the samples hit the properties asked for.

    pip install -e ".[chem]" && pip install --no-deps molsets   # RDKit, SELFIES; MOSES's CSV files, offline
    python experiments/molecules.py --representation kekule --grammar-features   # the CPU protocol, seeds 0 1 2
    python experiments/molecules.py --representation kekule --grammar-features \
        --guidance 0 0.25 0.5 0.75 1 2 --name molecules_kekule_grammar_guided   # + guidance, chosen per seed
    python experiments/molecules.py --representation smiles
    python experiments/molecules.py --representation selfies
    python experiments/molecules.py --protocol gpu                  # all 1.58M training molecules
    python experiments/molecules.py --train 512 --epochs 1 --samples 100 --seed 0   # a quick look

Protocols (a protocol's settings are defaults; every flag overrides them):
  cpu  the first --train MOSES training molecules, --epochs epochs; meant to finish on a 2-core
       machine in 30 minutes a seed, evaluation included;
  gpu  all of MOSES's training molecules, for a device with the throughput for them.
Two samplers are scored: MOSES's (temperature 1, nothing constrained), then the constrained one
(SMILES grammar and valences) at --constrained-temperature with guidance --guidance; given several
weights, each seed takes the smallest whose draws reach r >= --guidance-target for every property
(with 95% valid), asked for the properties of validation molecules (the 10,000 after the first
--train of the training CSV, never trained on), never of test molecules.
Training selects nothing on the test split: the run's last epoch is scored. The test split's first
--test molecules give the reported -ELBO; the metrics use MOSES's whole test and scaffold-test sets.
Seeds may run in parallel processes (`--seed S --name NAME_seed<S>` each), then `--merge-seeds 0 1 2
--name NAME` writes NAME.json from their files.
Writes experiments/results/NAME.json (each seed's numbers and their spread) and, for the first seed,
NAME_samples.smi: its first 10,000 samples, one per line, for anyone to re-score
(`cvae-jax evaluate-molecules --input ...`), and NAME_constrained_samples.smi, those of constrained
sampling.
"""

import argparse
import time
from pathlib import Path

import _shared
import jax
import numpy as np

from cvae_jax import molecules
from cvae_jax.apps import evaluate
from cvae_jax.data import smiles
from cvae_jax.molecules import benchmark, chem

PROTOCOLS = {
    "cpu": {"train": 300_000, "epochs": 2, "samples": 30_000, "decoder_hidden": 256},
    "gpu": {"train": 1_584_663, "epochs": 20, "samples": 30_000, "decoder_hidden": 512},
}


def property_hits(requested: np.ndarray, measured: np.ndarray, names, scale: np.ndarray) -> dict:
    """Requested against measured properties: Pearson r and MAE over the valid samples (and with the
    requests shuffled, what a model that ignored them would score); over all requests, the share
    answered by a valid molecule within half a training standard deviation of the request."""
    valid = ~np.isnan(measured).any(axis=1)
    shuffled = requested[np.random.default_rng(1).permutation(len(requested))]
    out = {}
    for i, name in enumerate(names):
        r, m, s = requested[valid, i], measured[valid, i], shuffled[valid, i]
        close = np.zeros(len(requested), bool)
        close[valid] = np.abs(r - m) <= 0.5 * scale[i]
        out[name] = {
            "pearson_r": float(np.corrcoef(r, m)[0, 1]),
            "pearson_r_shuffled": float(np.corrcoef(s, m)[0, 1]),
            "mae": float(np.mean(np.abs(r - m))),
            "mae_shuffled": float(np.mean(np.abs(s - m))),
            "hit_rate_all_requests": float(close.mean()),
        }
    return out


def validation_molecules(train_csv, num_train: int, count: int = 10_000) -> list[str]:
    """The molecules whose properties the guidance sweep asks for: the training file's `count` after
    its first `num_train` (never trained on), never the test file's."""
    return smiles.load_csv(train_csv, num_train + count)[num_train:]


def choose_guidance(draw, data, validation: list[str], weights, target: float, seed: int) -> tuple[float, list]:
    """The smallest guidance weight whose draws (`draw(requests, w)`: SMILES) reach Pearson r >= `target`
    on every property with 95% of them valid (else the one with the highest least r), asked for the
    properties of 6,000 of the `validation` molecules: never the test set the reported requests come
    from. Returns (the weight, each weight's scores)."""
    asked = data.conditions_like(validation, 6_000, seed)
    units = asked * data.std.astype(np.float32) + data.mean.astype(np.float32)
    sweep = []
    for w in sorted(weights):
        measured = chem.properties(draw(asked, w), data.names)
        hits = property_hits(units, measured, data.names, data.std)
        least = min(h["pearson_r"] for h in hits.values())
        valid = float(np.mean(~np.isnan(measured).any(axis=1)))
        sweep.append({"guidance": w, "valid": valid, "least_r": least, "control": hits})
    passing = [row for row in sweep if row["least_r"] >= target and row["valid"] >= 0.95]
    return (passing[0] if passing else max(sweep, key=lambda row: row["least_r"]))["guidance"], sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="cpu")
    parser.add_argument("--representation", choices=smiles.REPRESENTATIONS, default="smiles")
    parser.add_argument("--train", type=int, help="training molecules: the first N of the training CSV")
    parser.add_argument("--test", type=int, default=2_000, help="test molecules for the reported -ELBO")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--samples", type=int, help="molecules drawn for the metrics (MOSES: 30,000)")
    parser.add_argument("--train-csv", help="training SMILES (default: MOSES train from the molsets wheel)")
    parser.add_argument("--test-csv", help="test SMILES (default: MOSES test from the molsets wheel)")
    parser.add_argument("--test-scaffolds-csv", help="scaffold-test SMILES (default: MOSES's, from molsets)")
    parser.add_argument("--beta", type=float, default=1.0, help="final KL weight (MOSES's VAE: 0.05)")
    parser.add_argument("--free-bits", type=float, default=0.0, help="KL floor per latent dimension, nats")
    parser.add_argument("--word-dropout", type=float, default=0.0, help="share of previous tokens hidden in training")
    parser.add_argument("--decoder-hidden", type=int)
    parser.add_argument("--decoder-layers", type=int, default=1, help="stacked decoder GRUs (MOSES's VAE: 3)")
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument(
        "--grammar-features", action="store_true", help="the decoder reads the SMILES grammar's state (not SELFIES)"
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (MOSES: 1)")
    parser.add_argument(
        "--constrained-temperature",
        type=float,
        default=0.7,
        help="also score constrained samples (SMILES grammar and valences) at this temperature (negative: do not)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=[0.0],
        help="guidance weight of the constrained sampler; given several, each seed picks the smallest that "
        "reaches --guidance-target on validation molecules (those after the first --train of the training CSV)",
    )
    parser.add_argument(
        "--guidance-target",
        type=float,
        default=0.85,
        help="with several --guidance weights: the Pearson r every property should reach on validation",
    )
    parser.add_argument("--workdir", default="runs/molecules", help="run folders: WORKDIR_<repr>[_grammar][_seed<S>]")
    parser.add_argument(
        "--name", help="results file: experiments/results/NAME.json (default: molecules_<repr>[_grammar])"
    )
    parser.add_argument("--no-moses", action="store_true", help="use only the CSV files given, not MOSES's")
    parser.add_argument("--no-fcd", action="store_true", help="skip FCD (ChemNet on the references is slow on CPU)")
    parser.add_argument(
        "--merge-seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="measure nothing: merge NAME_seed<S>.json (runs of --seed S --name NAME_seed<S>) into NAME.json",
    )
    _shared.add_seed_arguments(parser)
    args = parser.parse_args()
    if args.merge_seeds:
        _shared.merge_seeds(args.name or "molecules", args.merge_seeds)
        return
    protocol = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in PROTOCOLS[args.protocol].items()}
    found = {} if args.no_moses else benchmark.moses_files()
    files = {
        "train": args.train_csv or found.get("train"),
        "test": args.test_csv or found.get("test"),
        "test_scaffolds": args.test_scaffolds_csv or found.get("test_scaffolds"),
    }
    if files["train"] is None or files["test"] is None:
        raise SystemExit(
            "MOSES's CSV files were not found: pip install --no-deps molsets, or give --train-csv and --test-csv"
        )
    variant = args.representation + ("_grammar" if args.grammar_features else "")
    name = args.name or f"molecules_{variant}"
    reference = smiles.load_csv(files["test"])  # conditions: the properties of random test molecules
    # Validation requests, for choosing the guidance weight: the 10,000 training-file molecules after the
    # first --train (never trained on); where the file ends there, the training molecules themselves.
    held = validation_molecules(files["train"], protocol["train"])

    def measure(seed: int) -> dict:
        cfg = molecules.recipe(
            str(files["train"]),
            str(files["test"]),
            num_train=protocol["train"],
            num_test=args.test,
            epochs=protocol["epochs"],
            beta=args.beta,
            free_bits=args.free_bits,
            word_dropout=args.word_dropout,
            seed=seed,
            representation=args.representation,
            decoder_hidden=protocol["decoder_hidden"],
            decoder_layers=args.decoder_layers,
            latent_dim=args.latent_dim,
            grammar_features=args.grammar_features,
        )
        start = time.perf_counter()
        data = molecules.prepare(cfg)
        prepare_s = time.perf_counter() - start
        workdir = _shared.seed_workdir(f"{args.workdir}_{variant}", seed)
        start = time.perf_counter()
        model, state, history = molecules.train(cfg, data, workdir=workdir)
        train_s = time.perf_counter() - start
        params, key = state.params, jax.random.key(seed)

        condition = data.conditions_like(reference, protocol["samples"], seed)
        requested = condition * data.std.astype(np.float32) + data.mean.astype(np.float32)

        def draw(rows_of: np.ndarray, temperature: float, constrained: bool, guidance: float, key) -> list[str]:
            return molecules.generate(
                model,
                params,
                key,
                rows_of,
                data.vocab,
                temperature=temperature,
                constrained=constrained,
                guidance=guidance,
                batch=2000,
            )

        validation = held or data.train_smiles

        def draw_and_score(temperature: float, constrained: bool, guidance: float = 0.0) -> dict:
            start = time.perf_counter()
            generated = draw(condition, temperature, constrained, guidance, key)
            sample_s = time.perf_counter() - start
            start = time.perf_counter()
            scores = benchmark.evaluate(
                generated,
                train_csv=files["train"],
                test_csv=files["test"],
                test_scaffolds_csv=files["test_scaffolds"],
                fcd=not args.no_fcd,
            )
            scored = {
                "temperature": temperature,
                "syntax_constrained": constrained,
                "guidance": guidance,
                "moses": {k: v for k, v in scores.items() if k not in ("files", "skipped")},
                "skipped": scores["skipped"],
                "control": property_hits(requested, chem.properties(generated, data.names), data.names, data.std),
                "seconds": {"sample": sample_s, "metrics": time.perf_counter() - start},
                "examples": generated[:20],
            }
            # every sample, beside the seed's run, for re-scoring (say, with metrics added later)
            kind = "constrained_" if constrained else ""
            (Path(workdir) / f"{kind}samples.smi").write_text("\n".join(generated) + "\n")
            if seed == seeds[0]:  # the first 10,000 samples, for anyone to re-score
                _shared.RESULTS.mkdir(parents=True, exist_ok=True)
                samples = f"{name}{'_constrained' if constrained else ''}_samples.smi"
                (_shared.RESULTS / samples).write_text("\n".join(generated[:10_000]) + "\n")
            return scored

        sampled = draw_and_score(args.temperature, False)
        constrained = None
        if args.constrained_temperature >= 0 and args.representation != "selfies":
            start = time.perf_counter()
            guidance, sweep = args.guidance[0], []
            if len(args.guidance) > 1:
                guidance, sweep = choose_guidance(
                    lambda asked, w: draw(asked, args.constrained_temperature, True, w, jax.random.fold_in(key, 7)),
                    data,
                    validation,
                    args.guidance,
                    args.guidance_target,
                    seed,
                )
            choose_s = time.perf_counter() - start
            constrained = {**draw_and_score(args.constrained_temperature, True, guidance), "guidance_sweep": sweep}
            constrained["seconds"]["choose_guidance"] = choose_s
        means, _ = model.apply(params, data.test["tokens"], data.test["condition"], method=model.encode)
        final = [row for row in history if row["split"] == "test"][-1]
        result = {
            "workdir": workdir,
            "config": cfg.to_dict(),
            "data": {"train_molecules": len(data.train_smiles), "test_molecules": len(data.test_smiles)},
            "vocab_size": data.vocab.size,
            "length": data.length,
            "test": {k: final[k] for k in ("neg_elbo", "recon", "kl")},
            "active_units": int(evaluate.active_units(np.asarray(means))[0]),
            "reconstruction": molecules.reconstruction(
                model, params, {k: v[:1000] for k, v in data.test.items()}, data.vocab
            ),
            **sampled,
            "constrained": constrained,
            "seconds": {"prepare": prepare_s, "train": train_s, **sampled["seconds"]},
        }
        for label, part in (("", sampled), ("constrained ", constrained)):
            if part is None:
                continue
            m = part["moses"]
            print(
                f"seed {seed} {label}T={part['temperature']} w={part['guidance']}: valid {m['valid']:.3f}, "
                f"unique@10k {m.get('unique@10000', float('nan')):.3f}, novelty {m.get('novelty', float('nan')):.3f}; "
                + ", ".join(f"{n} r={c['pearson_r']:.3f}" for n, c in part["control"].items()),
                flush=True,
            )
        return result

    seeds = _shared.seeds_of(args)
    _shared.over_seeds(
        name,
        seeds,
        measure,
        protocol=args.protocol,
        representation=args.representation,
        settings={
            **protocol,
            "beta": args.beta,
            "free_bits": args.free_bits,
            "word_dropout": args.word_dropout,
            "latent_dim": args.latent_dim,
            "decoder_layers": args.decoder_layers,
            "grammar_features": args.grammar_features,
            "temperature": args.temperature,
            "constrained_temperature": args.constrained_temperature,
            "guidance": args.guidance,
            "guidance_target": args.guidance_target,
        },
        files={k: str(v) for k, v in files.items()},
    )


if __name__ == "__main__":
    main()
