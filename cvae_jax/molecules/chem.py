"""Chemistry through RDKit (optional: `pip install -e ".[chem]"`): validity, canonical SMILES, the
properties a molecular CVAE conditions on, and the MOSES-style sample metrics.

Properties (Lim et al. 2018 condition on several of these): logP (Crippen), QED (drug-likeness,
0-1), molecular weight (Da), topological polar surface area (A^2).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from typing import Iterable, Sequence

import numpy as np

PROPERTIES = {"logp": "MolLogP", "qed": "qed", "mw": "MolWt", "tpsa": "TPSA"}


def _rdkit():
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import Descriptors
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('molecule properties and validity need RDKit: pip install -e ".[chem]"') from e
    RDLogger.DisableLog("rdApp.*")  # invalid samples are expected; do not print one line per failure
    return Chem, Descriptors


def canonical(smiles: str) -> str | None:
    """RDKit's canonical SMILES, or None when the string is not a valid molecule."""
    Chem, _ = _rdkit()
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return None if mol is None else Chem.MolToSmiles(mol)


def kekule(smiles: str) -> str | None:
    """The Kekulé form of a SMILES string (aromatic rings as alternating single and double bonds,
    RDKit's canonical order), or None when RDKit cannot parse or kekulize it."""
    Chem, _ = _rdkit()
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        return None
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Chem.MolSanitizeException:  # KekulizeException and its kin
        return None
    return Chem.MolToSmiles(mol, kekuleSmiles=True)


# A spawned pool starts by importing the caller's main module (for `cvae-jax`, the CLI and JAX) in every
# process: RDKit's per-molecule work on a shorter list is done sooner in this process.
POOL_MIN_ITEMS = 10_000


def parallel_map(fn, items: Sequence, jobs: int | None = None, chunk: int = 256) -> list:
    """[fn(x) for x in items], in a pool of `jobs` processes (default: the CPU count) for lists of at
    least POOL_MIN_ITEMS (and two chunks)."""
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1 or len(items) < max(POOL_MIN_ITEMS, 2 * chunk):
        return [fn(x) for x in items]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return pool.map(fn, items, chunksize=chunk)


def _property_row(smiles: str, names: tuple[str, ...]) -> list[float]:
    Chem, Descriptors = _rdkit()
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        return [np.nan] * len(names)
    return [getattr(Descriptors, PROPERTIES[n])(mol) for n in names]


def properties(
    smiles: Sequence[str], names: Sequence[str] = ("logp", "qed", "mw"), jobs: int | None = None
) -> np.ndarray:
    """float64 [N, len(names)]; rows of invalid molecules are NaN (a process pool for long lists)."""
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        raise ValueError(f"unknown molecular properties {unknown}; choose from {sorted(PROPERTIES)}")
    rows = parallel_map(functools.partial(_property_row, names=tuple(names)), list(smiles), jobs)
    return np.array(rows, np.float64).reshape(len(smiles), len(names))


def sample_metrics(generated: Sequence[str], training: Iterable[str]) -> dict[str, float]:
    """MOSES's basic metrics: validity (share of samples RDKit parses), uniqueness (distinct canonical
    molecules among the valid ones) and novelty (share of those distinct molecules not in `training`,
    compared canonically)."""
    valid = [c for c in (canonical(s) for s in generated) if c is not None]
    unique = set(valid)
    known = {c for c in (canonical(s) for s in training) if c is not None}
    return {
        "num_samples": len(generated),
        "validity": len(valid) / max(1, len(generated)),
        "uniqueness": len(unique) / max(1, len(valid)),
        "novelty": len(unique - known) / max(1, len(unique)),
    }
