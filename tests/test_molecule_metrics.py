"""cvae_jax.molecules.metrics: the MOSES metrics against values worked out by hand on a few molecules,
and the similarities against RDKit's own Tanimoto (an independent implementation)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit", reason="needs RDKit, the [chem] extra: pip install -e '.[chem]'")

from rdkit import DataStructs  # noqa: E402
from rdkit.Chem import rdFingerprintGenerator  # noqa: E402

from cvae_jax import cli  # noqa: E402
from cvae_jax.data import smiles  # noqa: E402
from cvae_jax.molecules import metrics  # noqa: E402

ASPIRIN, IBUPROFEN = "CC(=O)Oc1ccccc1C(=O)O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"


def _rdkit_tanimoto(a: str, b: str) -> float:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    return DataStructs.TanimotoSimilarity(gen.GetFingerprint(metrics.mol(a)), gen.GetFingerprint(metrics.mol(b)))


def test_valid_unique_and_novelty_by_hand():
    generated = ["CCO", "OCC", "C1CC", "", "c1ccccc1", "C(C)O"]  # ethanol x3 (3 spellings), a broken ring, ""
    out = metrics.moses_metrics(generated, train={"CCO"}, ks=(2, 4, 10), jobs=1)
    assert out["valid"] == pytest.approx(4 / 6)
    assert out["unique@2"] == pytest.approx(1 / 2)  # CCO, CCO
    assert out["unique@4"] == pytest.approx(2 / 4)  # CCO, CCO, c1ccccc1, CCO
    assert out["unique@10"] == pytest.approx(2 / 4) and out["unique@10_of"] == 4
    assert out["novelty"] == pytest.approx(1 / 2)  # of {CCO, benzene}, benzene is new


def test_tanimoto_stats_match_a_worked_example_across_blocks():
    reference = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]], np.uint8)
    generated = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    stats = metrics.tanimoto_stats(reference, generated, block=2)  # 2 x 2 blocks, one of them padded
    # [1,0,0,0] vs the three: 1/2, 0, 0; the empty one: 0, 0, and 1 against the other empty one
    np.testing.assert_allclose(stats["max"], [0.5, 1.0])
    np.testing.assert_allclose(stats["mean"], [0.5 / 3, 1 / 3])
    np.testing.assert_allclose(stats["rms"], [np.sqrt(0.25 / 3), np.sqrt(1 / 3)])


def test_intdiv_and_snn_agree_with_rdkit_tanimoto():
    t = _rdkit_tanimoto(ASPIRIN, IBUPROFEN)
    assert 0 < t < 1
    reference = metrics.reference_stats([ASPIRIN], jobs=1, fcd=False)
    out = metrics.moses_metrics([ASPIRIN, IBUPROFEN], references={"Test": reference}, ks=(2,), jobs=1, fcd=False)
    # pairs (a,a), (a,b), (b,a), (b,b): mean similarity (2 + 2t) / 4
    assert out["IntDiv"] == pytest.approx(1 - (2 + 2 * t) / 4, abs=1e-6)
    assert out["IntDiv2"] == pytest.approx(1 - np.sqrt((1 + t * t) / 2), abs=1e-6)
    assert out["SNN/Test"] == pytest.approx((1 + t) / 2, abs=1e-6)  # aspirin finds itself, ibuprofen finds aspirin


def test_cosine_frag_and_scaf_by_hand():
    assert metrics.cosine(Counter(a=1, b=1), Counter(a=2)) == pytest.approx(1 / np.sqrt(2))
    assert np.isnan(metrics.cosine(Counter(), Counter(a=1)))
    assert metrics.scaffold("c1ccccc1CC") is None  # one ring: below MOSES's two
    assert metrics.scaffold("CCc1ccc2ccccc2c1") == "c1ccc2ccccc2c1"
    # ethyl benzoate has three BRICS bonds: ethyl-O (types 4, 3), O-C(=O) (3, 1), C(=O)-phenyl (6, 16)
    expected = ["[4*]CC", "[3*]O[3*]", "[1*]C([6*])=O", "[16*]c1ccccc1"]
    assert sorted(metrics.fragments("CCOC(=O)c1ccccc1")) == sorted(expected)
    same = metrics.reference_stats([ASPIRIN, "CCc1ccc2ccccc2c1"], jobs=1, fcd=False)
    out = metrics.moses_metrics([ASPIRIN, "CCc1ccc2ccccc2c1"], references={"Test": same}, jobs=1, fcd=False)
    assert out["Frag/Test"] == pytest.approx(1.0) and out["Scaf/Test"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "smiles, passes",
    [
        ("CCO", True),
        (IBUPROFEN, True),
        ("C[N+](C)(C)C", False),  # charged
        ("CCI", False),  # iodine is not among the allowed atoms
        ("C1CCCCCCC1", False),  # an 8-membered ring
        ("Oc1ccccc1O", False),  # catechol: a PAINS pattern
        ("C1CC", False),  # invalid
    ],
)
def test_filters(smiles, passes):
    assert metrics.passes_filters(smiles) is passes


def test_no_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="no molecules"):
        metrics.moses_metrics([])


DATA = Path(__file__).resolve().parent / "data"
TRAIN, TEST = DATA / "moses_train_1200.csv.gz", DATA / "moses_test_400.csv.gz"


@pytest.mark.slow
def test_evaluate_molecules_scores_any_smi_file_against_given_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_JAX_CACHE", str(tmp_path / "cache"))  # the derived reference data go here
    known = smiles.load_csv(TRAIN, 2)
    smi = tmp_path / "other_model.smi"
    smi.write_text("\n".join([*known, "C1CC", "CCO"]) + "\n")  # two training molecules, an invalid one, ethanol
    out = tmp_path / "scores.json"
    args = ["--input", str(smi), "--train-csv", str(TRAIN), "--test-csv", str(TEST), "--no-moses", "--no-fcd"]
    assert cli.main(["evaluate-molecules", *args, "--jobs", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 4 and result["valid"] == pytest.approx(3 / 4)
    assert result["novelty"] == pytest.approx(1 / 3)  # only ethanol is new
    assert result["unique@1000"] == pytest.approx(1.0) and result["unique@1000_of"] == 3
    # SNN against RDKit's own Tanimoto: each valid sample's nearest test molecule, averaged
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    test_fps = [gen.GetFingerprint(metrics.mol(s)) for s in smiles.load_csv(TEST) if metrics.mol(s) is not None]
    nearest = [
        max(DataStructs.BulkTanimotoSimilarity(gen.GetFingerprint(metrics.mol(s)), test_fps)) for s in [*known, "CCO"]
    ]
    assert result["SNN/Test"] == pytest.approx(np.mean(nearest), abs=1e-6) and "SNN/TestSF" not in result
    assert any("TestSF" in line for line in result["skipped"])
    # the reference data were cached: a second call reads them back and gives the same numbers
    assert cli.main(["evaluate-molecules", *args, "--jobs", "1", "--out", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["SNN/Test"] == result["SNN/Test"]


def test_evaluate_molecules_bad_input_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "missing.smi"
    assert cli.main(["evaluate-molecules", "--input", str(missing), "--no-moses", "--out", str(tmp_path / "x")]) == 2
    assert "no molecule file" in capsys.readouterr().err
    empty = tmp_path / "empty.smi"
    empty.write_text("")
    assert cli.main(["evaluate-molecules", "--input", str(empty), "--no-moses", "--out", str(tmp_path / "x")]) == 2
    assert "no molecules to score" in capsys.readouterr().err


def _fixture_sets() -> tuple[dict, dict]:
    """MOSES's own metric values on the fixtures (tests/data/moses_metrics.json, written by
    tests/data/make_moses_metrics.py with molsets 0.3.1) and the sets they were computed on."""
    fixture = json.loads((DATA / "moses_metrics.json").read_text())
    train, test = smiles.load_csv(TRAIN), smiles.load_csv(TEST)
    generated = train[:300] + train[:100] + ["C1CC", "not a molecule", "c1ccccc", ""]
    return fixture, {"generated": generated, "train": train[200:], "Test": test[:200], "TestSF": test[200:]}


@pytest.mark.slow
def test_metrics_match_the_values_of_moses_own_code():
    """Every metric of the suite against molsets 0.3.1's get_all_metrics on the same molecules: to
    float rounding for the counts, Tanimoto and cosine metrics, and for FCD (both run fcd_torch's ChemNet;
    skipped without it) to 1e-4 relative, as the eigen-solvers' order of summation differs. Rounding:
    1e-8, but IntDiv2 (a root of float32 sums of squared similarities) to 1e-7."""
    fixture, sets = _fixture_sets()
    expected = fixture["metrics"]
    train = {c for c in (metrics.canonical(s) for s in sets["train"]) if c is not None}
    fcd = metrics.fcd_available()
    references = {name: metrics.reference_stats(sets[name], jobs=1, fcd=fcd) for name in ("Test", "TestSF")}
    out = metrics.moses_metrics(sets["generated"], train=train, references=references, ks=(100, 400), jobs=1, fcd=fcd)
    ours = {"Novelty": "novelty"}
    checked = 0
    for name, value in expected.items():
        if name in ("logP", "SA", "QED", "weight"):  # MOSES's property distances: not part of this suite
            continue
        if name.startswith("FCD/"):
            if fcd:
                assert out[name] == pytest.approx(value, rel=1e-4), name
                checked += 1
            continue
        tolerance = 1e-7 if name == "IntDiv2" else 1e-8
        assert out[ours.get(name, name)] == pytest.approx(value, abs=tolerance), name
        checked += 1
    assert checked >= 13 + (2 if fcd else 0)


@pytest.mark.slow
def test_fcd_reads_moses_precomputed_statistics_beside_a_reference_file(tmp_path, monkeypatch):
    """A reference CSV with MOSES's `<name>_stats.npz` beside it: FCD uses those statistics, and ChemNet
    runs over the samples only, giving what ChemNet over the whole reference file gives."""
    pytest.importorskip("fcd_torch", reason="needs fcd_torch, the [fcd] extra")
    import shutil

    from cvae_jax.molecules import benchmark

    monkeypatch.setenv("CVAE_JAX_CACHE", str(tmp_path / "cache"))
    fixture, sets = _fixture_sets()
    folder = tmp_path / "moses"
    folder.mkdir()
    shutil.copy(TEST, folder / "test.csv.gz")
    (folder / "train.csv.gz").write_bytes(TRAIN.read_bytes())
    computed = metrics._fcd().precalc([c for c in map(metrics.canonical, smiles.load_csv(TEST)) if c])
    np.savez(folder / "test_stats.npz", stats={"FCD": computed, "SNN": {}})  # MOSES's layout
    direct = benchmark.evaluate(sets["generated"][:50], test_csv=TEST, jobs=1)  # ChemNet over the references

    def no_chemnet_on_references(smiles_list, jobs=None, fcd=True):
        assert not fcd, "ChemNet ran over the reference file although its statistics lie beside it"
        return original(smiles_list, jobs, fcd)

    original = metrics.reference_stats
    monkeypatch.setattr(metrics, "reference_stats", no_chemnet_on_references)
    precomputed = benchmark.evaluate(sets["generated"][:50], test_csv=folder / "test.csv.gz", jobs=1)
    assert precomputed["FCD/Test"] == pytest.approx(direct["FCD/Test"], rel=1e-6)
    assert precomputed["SNN/Test"] == direct["SNN/Test"]
    (folder / "test_stats.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not MOSES's statistics file"):
        benchmark.evaluate(["CCO"], test_csv=folder / "test.csv.gz", jobs=1)
