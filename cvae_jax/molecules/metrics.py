"""The MOSES metric suite (Polykovskiy et al. 2020, "Molecular Sets (MOSES)"), computed with RDKit as
MOSES's own code computes it, so that the numbers set beside its published table:

- valid: the share of samples RDKit parses and sanitizes (an empty string is invalid);
- unique@k: distinct canonical molecules among the first k valid samples, over k;
- novelty: the share of distinct valid samples not in the training set (canonical SMILES; MOSES
  compares against the 1.58M molecules of its training split);
- IntDiv (IntDiv2): 1 - the mean (root mean square) Tanimoto similarity over all pairs of valid
  samples, the pair of a molecule with itself included;
- SNN: the mean, over valid samples, of the highest Tanimoto similarity to a reference molecule;
- Frag: the cosine similarity of BRICS fragment counts, samples against reference;
- Scaf: the cosine similarity of Bemis-Murcko scaffold counts (scaffolds of two rings or more);
- Filters: the share of valid samples that pass MOSES's MCF and PAINS filters, carry no charge,
  have only C, N, S, O, F, Cl, Br, H atoms and no ring of 8 or more atoms;
- FCD: the Frechet ChemNet distance, when the optional `fcd_torch` package is installed.

Fingerprints are Morgan, radius 2, 1,024 bits. SNN, Frag, Scaf and FCD are reported against each
reference set given (MOSES: the test set, "Test", and the scaffold-test set, "TestSF"). The
per-molecule RDKit work runs in a process pool; the similarity matrices are JAX matrix products.
Checked against MOSES's own code (molsets 0.3.1's moses.metrics, run with shims for today's pandas
and RDKit) on 403 molecules of its train and test files: valid, unique@k, novelty, IntDiv, IntDiv2,
Filters, SNN, Frag and Scaf agree to 1e-8.
"""

from __future__ import annotations

import csv
import functools
import math
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from cvae_jax.molecules.chem import parallel_map

FINGERPRINT_BITS, MORGAN_RADIUS = 1024, 2
FILTERS_CSV = Path(__file__).parent / "data" / "moses_filters.csv"
ALLOWED_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})


def _rdkit():
    from cvae_jax.molecules.chem import _rdkit as load

    Chem, _ = load()
    return Chem


def mol(smiles: str):
    """RDKit's molecule of `smiles`, or None when it does not parse and sanitize (MOSES's get_mol)."""
    if not smiles:
        return None
    Chem = _rdkit()
    m = Chem.MolFromSmiles(smiles)
    if m is None:
        return None
    try:
        Chem.SanitizeMol(m)
    except ValueError:
        return None
    return m


def canonical(smiles: str) -> str | None:
    m = mol(smiles)
    return None if m is None else _rdkit().MolToSmiles(m)


@functools.lru_cache(maxsize=1)
def _morgan():
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=FINGERPRINT_BITS)


def fingerprint(smiles: str) -> np.ndarray:
    """Morgan fingerprint bits, uint8 [1024] (zeros for an invalid molecule)."""
    m = mol(smiles)
    out = np.zeros(FINGERPRINT_BITS, np.uint8)
    if m is not None:
        out[:] = _morgan().GetFingerprintAsNumPy(m)
    return out


def fragments(smiles: str) -> list[str]:
    """The BRICS fragments of a molecule, as SMILES (MOSES's fragmenter)."""
    from rdkit.Chem import AllChem

    return _rdkit().MolToSmiles(AllChem.FragmentOnBRICSBonds(mol(smiles))).split(".")


def scaffold(smiles: str, min_rings: int = 2) -> str | None:
    """The Bemis-Murcko scaffold as canonical SMILES, or None with fewer than `min_rings` rings."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    try:
        core = MurckoScaffold.GetScaffoldForMol(mol(smiles))
    except (ValueError, RuntimeError):
        return None
    text = _rdkit().MolToSmiles(core)
    if not text or core.GetRingInfo().NumRings() < min_rings:
        return None
    return text


@functools.lru_cache(maxsize=1)
def _filters():
    Chem = _rdkit()
    with open(FILTERS_CSV, newline="") as f:
        return [Chem.MolFromSmarts(row["smarts"]) for row in csv.DictReader(f)]


def passes_filters(smiles: str) -> bool:
    """MOSES's medicinal-chemistry filters (mol_passes_filters)."""
    Chem = _rdkit()
    m = mol(smiles)
    if m is None:
        return False
    if any(len(ring) >= 8 for ring in m.GetRingInfo().AtomRings()):
        return False
    if any(atom.GetFormalCharge() != 0 for atom in m.GetAtoms()):
        return False
    if any(atom.GetSymbol() not in ALLOWED_ATOMS for atom in m.GetAtoms()):
        return False
    with_h = Chem.AddHs(m)
    if any(with_h.HasSubstructMatch(pattern) for pattern in _filters()):
        return False
    text = Chem.MolToSmiles(m, isomericSmiles=False)
    return bool(text) and Chem.MolFromSmiles(text) is not None


def _fingerprints(smiles: Sequence[str], jobs: int | None) -> np.ndarray:
    return np.stack(parallel_map(fingerprint, list(smiles), jobs)) if len(smiles) else np.zeros((0, FINGERPRINT_BITS))


def _counts(fn, smiles: Sequence[str], jobs: int | None) -> Counter:
    counts = Counter()
    for value in parallel_map(fn, list(smiles), jobs):
        if isinstance(value, list):
            counts.update(value)
        elif value is not None:
            counts[value] += 1
    return counts


@functools.lru_cache(maxsize=1)
def _tanimoto_block():
    """The compiled block kernel of tanimoto_stats (one program for all calls: the blocks have fixed shapes)."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def part(ref, ref_valid, gen):
        # 0/1 entries are exact in bfloat16 and the counts are summed in float32, so the intersections
        # are exact integers while the matrix product runs at the bfloat16 rate where a CPU has one.
        inter = jax.lax.dot_general(gen, ref, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        union = gen.sum(1, dtype=jnp.float32)[:, None] + ref.sum(1, dtype=jnp.float32)[None, :] - inter
        sim = jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 1.0)
        return (
            jnp.max(jnp.where(ref_valid[None, :], sim, -1.0), axis=1),
            jnp.sum(jnp.where(ref_valid[None, :], sim, 0.0), axis=1),
            jnp.sum(jnp.where(ref_valid[None, :], sim * sim, 0.0), axis=1),
        )

    return part


def tanimoto_stats(reference: np.ndarray, generated: np.ndarray, block: int = 4096) -> dict[str, np.ndarray]:
    """For each generated fingerprint [G, bits] against all reference ones [R, bits]: the highest,
    the mean and the root-mean-square Tanimoto similarity (1 where both fingerprints are empty, as in
    MOSES). JAX matrix products over fixed-size blocks (padding masked out)."""
    import jax.numpy as jnp

    part = _tanimoto_block()

    def pad(a, n):
        return np.concatenate([a, np.zeros((n - len(a), a.shape[1]), a.dtype)]) if len(a) < n else a

    g_count, r_count = len(generated), len(reference)
    best, total, squares = np.full(g_count, -1.0), np.zeros(g_count), np.zeros(g_count)
    for i in range(0, g_count, block):
        gen = jnp.asarray(pad(generated[i : i + block], block), jnp.bfloat16)
        for j in range(0, r_count, block):
            ref = reference[j : j + block]
            valid = np.arange(block) < len(ref)
            ref = jnp.asarray(pad(ref, block), jnp.bfloat16)
            b, t, s = (np.asarray(v)[: min(block, g_count - i)] for v in part(ref, valid, gen))
            sl = slice(i, i + len(b))
            best[sl], total[sl], squares[sl] = np.maximum(best[sl], b), total[sl] + t, squares[sl] + s
    return {"max": best, "mean": total / r_count, "rms": np.sqrt(squares / r_count)}


def cosine(reference: Counter, generated: Counter) -> float:
    """Cosine similarity of two count vectors given as {key: count} (NaN when either is empty)."""
    if not reference or not generated:
        return float("nan")
    dot = sum(count * generated.get(key, 0) for key, count in reference.items())
    norm = math.sqrt(sum(c * c for c in reference.values())) * math.sqrt(sum(c * c for c in generated.values()))
    return dot / norm


def reference_stats(smiles: Sequence[str], jobs: int | None = None, fcd: bool = True) -> dict:
    """What SNN, Frag, Scaf (and FCD, with `fcd` and fcd_torch installed) need of a reference set: its
    fingerprints, fragment and scaffold counts (and ChemNet statistics) of the molecules that parse."""
    valid = [c for c in parallel_map(canonical, list(smiles), jobs) if c is not None]
    stats = {
        "fingerprints": _fingerprints(valid, jobs),
        "fragments": _counts(fragments, valid, jobs),
        "scaffolds": _counts(scaffold, valid, jobs),
    }
    if fcd and fcd_available():
        stats["fcd"] = _fcd().precalc(valid)
    return stats


def _fcd():
    from fcd_torch import FCD

    return FCD(device="cpu", n_jobs=1)


def fcd_available() -> bool:
    try:
        import fcd_torch  # noqa: F401
    except ImportError:
        return False
    return True


def moses_metrics(
    generated: Sequence[str],
    *,
    train: set[str] | None = None,
    references: dict[str, dict] | None = None,
    ks: Sequence[int] = (1000, 10_000),
    jobs: int | None = None,
    fcd: bool = True,
) -> dict:
    """The MOSES metrics of `generated` SMILES. `train`: canonical training SMILES (for novelty);
    `references`: {name: reference_stats(...)} (e.g. {"Test": ..., "TestSF": ...}). A unique@k with
    fewer than k valid samples is computed on those there are, and `unique@k_of` says how many."""
    generated = list(generated)
    if not generated:
        raise ValueError("no molecules to score: give at least one SMILES string")
    canon = parallel_map(canonical, generated, jobs)
    valid = [c for c in canon if c is not None]
    out: dict = {"num_samples": len(generated), "num_valid": len(valid), "valid": len(valid) / len(generated)}
    for k in ks:
        first = valid[:k]
        out[f"unique@{k}"] = len(set(first)) / len(first) if first else float("nan")
        if len(first) < k:
            out[f"unique@{k}_of"] = len(first)
    if not valid:
        return out
    distinct = set(valid)
    if train is not None:
        out["novelty"] = len(distinct - train) / len(distinct)
    fps = _fingerprints(valid, jobs)
    own = tanimoto_stats(fps, fps)
    out["IntDiv"] = float(1 - own["mean"].mean())
    out["IntDiv2"] = float(1 - own["rms"].mean())
    out["Filters"] = float(np.mean(parallel_map(passes_filters, valid, jobs)))
    frag, scaf = _counts(fragments, valid, jobs), _counts(scaffold, valid, jobs)
    fcd_model = fcd_stats = None  # ChemNet runs over the samples once, whatever the references
    for name, ref in (references or {}).items():
        out[f"SNN/{name}"] = float(tanimoto_stats(ref["fingerprints"], fps)["max"].mean())
        out[f"Frag/{name}"] = cosine(ref["fragments"], frag)
        out[f"Scaf/{name}"] = cosine(ref["scaffolds"], scaf)
        if fcd and "fcd" in ref and fcd_available():
            if fcd_model is None:
                fcd_model = _fcd()
                fcd_stats = fcd_model.precalc(valid)
            out[f"FCD/{name}"] = float(fcd_model.metric(ref["fcd"], fcd_stats))
    return out
