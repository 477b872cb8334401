"""Chemistry through RDKit (optional: `pip install -e ".[chem]"`): validity, canonical SMILES, the
properties a molecular CVAE conditions on, and the MOSES-style sample metrics.

Properties (Lim et al. 2018 condition on several of these): logP (Crippen), QED (drug-likeness,
0-1), molecular weight (Da), topological polar surface area (A^2).
"""

from __future__ import annotations

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


def properties(smiles: Sequence[str], names: Sequence[str] = ("logp", "qed", "mw")) -> np.ndarray:
    """float64 [N, len(names)]; rows of invalid molecules are NaN."""
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        raise ValueError(f"unknown molecular properties {unknown}; choose from {sorted(PROPERTIES)}")
    Chem, Descriptors = _rdkit()
    out = np.full((len(smiles), len(names)), np.nan)
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s) if s else None
        if mol is not None:
            out[i] = [getattr(Descriptors, PROPERTIES[n])(mol) for n in names]
    return out


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
