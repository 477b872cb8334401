"""Scoring molecules the MOSES way: the metric suite of cvae_jax.molecules.metrics against a training
set (novelty) and reference sets (SNN, Frag, Scaf, FCD), by default MOSES's own train, test and
scaffold-test splits from the molsets wheel. What is derived from a reference file (canonical
training SMILES; fingerprints, fragment and scaffold counts, FCD statistics of the references) is
computed once and cached (cvae_jax.data.cache), since MOSES's files hold 1.58M and 2 x 176k molecules.
"""

from __future__ import annotations

import gzip
import json
import pickle
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from cvae_jax.data import cache, smiles
from cvae_jax.molecules import metrics

NUM_SAMPLES = 30_000  # what MOSES samples from each model


def moses_files() -> dict[str, Path | None]:
    """MOSES's train, test and test_scaffolds CSVs from the molsets wheel, None for those not found."""
    found = {}
    for split in smiles.MOSES_SPLITS:
        try:
            found[split] = smiles.moses_csv(split)
        except FileNotFoundError:
            found[split] = None
    return found


def read_smi(path: str | Path) -> list[str]:
    """Molecules of a .smi file (one SMILES per line, anything after white space ignored) or of a CSV
    with a SMILES column (.csv, .csv.gz); blank lines count as (invalid) empty samples in a .smi file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no molecule file at {path}: give a .smi file (one SMILES per line) or a CSV")
    if ".csv" in path.suffixes:
        return smiles.load_csv(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} could not be read as a text file of SMILES: {e}") from e
    if lines and lines[0].strip().upper() in ("SMILES", "SMILES,"):
        lines = lines[1:]
    return [line.split()[0] if line.strip() else "" for line in lines]


def training_set(path: str | Path, jobs: int | None = None) -> set[str]:
    """The canonical SMILES of a training CSV, for novelty (cached)."""
    path = Path(path)
    folder = cache.keyed_dir("moses_train", [path])
    done = folder / "canonical.txt.gz"
    if not done.exists():
        canon = metrics.parallel_map(metrics.canonical, smiles.load_csv(path), jobs, chunk=2048)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = done.with_suffix(".tmp")
        with gzip.open(tmp, "wt") as f:
            f.write("\n".join(sorted({c for c in canon if c is not None})))
        tmp.replace(done)
    with gzip.open(done, "rt") as f:
        return set(f.read().splitlines())


def precomputed_fcd(path: str | Path) -> dict | None:
    """MOSES's own ChemNet statistics ({"mu", "sigma"}) of a reference CSV, where they lie beside it as
    the molsets wheel ships them (test.csv.gz beside test_stats.npz, holding {"FCD": {"mu", "sigma"}}),
    else None. With them, FCD runs ChemNet over the samples only, not over the 176k references."""
    path = Path(path)
    stats = path.with_name(f"{path.name.split('.')[0]}_stats.npz")
    if not stats.is_file():
        return None
    try:  # MOSES saves a pickled dict in its npz: read only from the folder of the reference file itself
        saved = np.load(stats, allow_pickle=True)["stats"].item()["FCD"]
        mu, sigma = np.asarray(saved["mu"], np.float64), np.asarray(saved["sigma"], np.float64)
    except (OSError, EOFError, KeyError, ValueError, TypeError, AttributeError, pickle.UnpicklingError) as e:
        raise ValueError(
            f"{stats} is not MOSES's statistics file ({type(e).__name__}: {e}); remove or rename it"
        ) from e
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{stats}: FCD statistics of shapes {mu.shape} and {sigma.shape}, not [D] and [D, D]")
    return {"mu": mu, "sigma": sigma}


def reference(path: str | Path, jobs: int | None = None, fcd: bool = True) -> dict:
    """metrics.reference_stats of a reference CSV (cached); its FCD statistics are MOSES's precomputed
    ones where they lie beside the file (precomputed_fcd), else ChemNet's over the whole file."""
    path = Path(path)
    published = precomputed_fcd(path) if fcd else None
    fcd = fcd and published is None and metrics.fcd_available()
    folder = cache.keyed_dir("moses_reference", [path], extra=f"fcd={fcd}")
    arrays, counts = folder / "arrays.npz", folder / "counts.json"
    if not counts.exists():
        stats = metrics.reference_stats(smiles.load_csv(path), jobs, fcd)
        folder.mkdir(parents=True, exist_ok=True)
        extra = {f"fcd_{k}": v for k, v in stats.get("fcd", {}).items()}
        np.savez(arrays, fingerprints=np.packbits(stats["fingerprints"], axis=1), **extra)
        tmp = counts.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fragments": stats["fragments"], "scaffolds": stats["scaffolds"]}))
        tmp.replace(counts)  # written last: its presence marks a complete entry
    saved, table = np.load(arrays), json.loads(counts.read_text())
    out = {
        "fingerprints": np.unpackbits(saved["fingerprints"], axis=1)[:, : metrics.FINGERPRINT_BITS],
        "fragments": Counter(table["fragments"]),
        "scaffolds": Counter(table["scaffolds"]),
    }
    computed = {k[4:]: saved[k] for k in saved.files if k.startswith("fcd_")}
    if published is not None or computed:
        out["fcd"] = published if published is not None else computed
    return out


def evaluate(
    generated: Sequence[str],
    *,
    train_csv: str | Path | None = None,
    test_csv: str | Path | None = None,
    test_scaffolds_csv: str | Path | None = None,
    jobs: int | None = None,
    fcd: bool = True,
) -> dict:
    """The MOSES metrics of `generated`; a file not given (None) leaves out the metrics that need it,
    and the result's "skipped" says which and why."""
    references, skipped = {}, []
    for name, path in (("Test", test_csv), ("TestSF", test_scaffolds_csv)):
        if path is None:
            skipped.append(f"SNN/Frag/Scaf/FCD against {name}: no reference file")
        else:
            references[name] = reference(path, jobs, fcd)
    if train_csv is None:
        skipped.append("novelty: no training file")
    if fcd and not metrics.fcd_available():
        skipped.append('FCD: install the optional fcd_torch package (pip install -e ".[fcd]")')
    train = training_set(train_csv, jobs) if train_csv is not None else None
    scores = metrics.moses_metrics(generated, train=train, references=references, jobs=jobs, fcd=fcd)
    files = {"train": train_csv, "test": test_csv, "test_scaffolds": test_scaffolds_csv}
    return {**scores, "files": {k: str(v) if v else None for k, v in files.items()}, "skipped": skipped}
