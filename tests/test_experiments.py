"""The experiment scripts run end to end (tiny budgets, temporary folders) and their measured
results mean what they say: a VAE over windows finds injected anomalies in a synthetic ECG-like series."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # whole experiment scripts

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def _write_series(path: Path, values: np.ndarray, anomalous: np.ndarray) -> None:
    lines = ["timestamp,value-0,is_anomaly"] + [f"{i},{v},{int(a)}" for i, (v, a) in enumerate(zip(values, anomalous))]
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")


def _run(script: str, *args: str, tmp_path: Path) -> None:
    env = {**os.environ, "CVAE_JAX_RESULTS": str(tmp_path / "results"), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_ecg_experiment_finds_injected_anomalies(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(3000)
    beat = np.sin(2 * np.pi * t / 25) + 0.3 * np.sin(2 * np.pi * t / 12.5) + 0.05 * rng.normal(size=len(t))
    _write_series(tmp_path / "ecg-diff-count-3_TRAIN_NA.csv.gz", beat, np.zeros(len(t), bool))
    test = beat.copy()
    anomalous = np.zeros(len(t), bool)
    for start in (700, 1900):  # two segments where the rhythm doubles its frequency
        anomalous[start : start + 60] = True
        test[start : start + 60] = np.sin(2 * np.pi * t[start : start + 60] / 9)
    _write_series(tmp_path / "ecg-diff-count-3_TEST.csv.gz", test, anomalous)
    _run(
        "anomaly_ecg.py",
        "--data",
        str(tmp_path),
        "--windows",
        "25",
        "--epochs",
        "8",
        "--k",
        "10",
        "--workdir",
        str(tmp_path / "runs"),
        "--seed",
        "0",
        tmp_path=tmp_path,
    )
    result = json.loads((tmp_path / "results" / "anomaly_ecg.json").read_text())
    assert result["seeds"] == [0]
    scores = result["by_seed"]["0"]["windows"]["25"]["scores"]
    assert scores["vae_recon"]["point_auroc"] > 0.9 and scores["vae_nll"]["point_auroc"] > 0.9, scores
    assert (tmp_path / "results" / "anomaly_ecg.png").stat().st_size > 0


def test_digit_holdout_experiment_writes_one_row_per_class_and_seed(tmp_path):
    _run(
        "anomaly_digits.py",
        "--epochs",
        "2",
        "--k",
        "10",
        "--classes",
        "0,1",
        "--workdir",
        str(tmp_path / "runs"),
        "--seeds",
        "0",
        "1",
        tmp_path=tmp_path,
    )
    result = json.loads((tmp_path / "results" / "anomaly_digits.json").read_text())
    assert result["seeds"] == [0, 1]
    for seed in ("0", "1"):
        rows = result["by_seed"][seed]["per_class"]
        assert [r["held_out"] for r in rows] == [0, 1]
        for kind in ("nll", "neg_elbo", "recon"):  # the table's mean is that of the held-out classes
            per_class = [row[kind]["auroc"] for row in rows]
            assert result["by_seed"][seed]["mean_auroc"][kind] == pytest.approx(np.mean(per_class))
            assert all(row[kind]["false_positive_rate"] < 0.5 for row in rows)
    # the reported spread is that of the seeds' own numbers, and the seeds trained different models
    aurocs = [result["by_seed"][seed]["mean_auroc"]["recon"] for seed in ("0", "1")]
    spread = result["spread"]["mean_auroc"]["recon"]
    assert spread["mean"] == pytest.approx(np.mean(aurocs)) and spread["std"] == pytest.approx(np.std(aurocs, ddof=1))
    assert aurocs[0] != aurocs[1]
    # each trained run is a real run directory: the CLI scores with it
    for run in ("run", "run_seed1"):
        assert (tmp_path / "runs" / "holdout_0" / run / "config.json").exists()


def test_molecule_experiment_scores_moses_metrics_and_control(tmp_path):
    pytest.importorskip("rdkit", reason="needs RDKit, the [chem] extra: pip install -e '.[chem]'")
    from cvae_jax.molecules import chem

    fixtures = Path(__file__).resolve().parent / "data"
    train, test = fixtures / "moses_train_1200.csv.gz", fixtures / "moses_test_400.csv.gz"
    _run(
        "molecules.py",
        *("--train", "512", "--test", "100", "--epochs", "1", "--samples", "60", "--seed", "0"),
        *("--train-csv", str(train), "--test-csv", str(test), "--test-scaffolds-csv", str(test), "--no-moses"),
        *("--decoder-hidden", "32", "--latent-dim", "8", "--workdir", str(tmp_path / "runs" / "mol")),
        *("--representation", "kekule", "--grammar-features"),
        tmp_path=tmp_path,
    )
    result = json.loads((tmp_path / "results" / "molecules_kekule_grammar.json").read_text())
    run = result["by_seed"]["0"]
    assert run["data"]["train_molecules"] == 512 and run["config"]["train"]["beta"] == 1.0
    assert run["config"]["data"]["representation"] == "kekule" and run["config"]["model"]["grammar_features"]
    assert (tmp_path / "runs" / "mol_kekule_grammar" / "config.json").exists()
    for scored, temperature in ((run, 1.0), (run["constrained"], 0.7)):  # free and syntax-constrained samples
        moses = scored["moses"]
        kind = "" if temperature == 1.0 else "constrained_"
        drawn = (tmp_path / "runs" / "mol_kekule_grammar" / f"{kind}samples.smi").read_text().splitlines()
        valid = [s for s in drawn if chem.canonical(s) is not None]
        assert scored["temperature"] == temperature and moses["num_samples"] == len(drawn) == 60
        assert moses["valid"] == pytest.approx(len(valid) / 60) and valid  # what RDKit says of every sample
        assert {"SNN/Test", "Frag/Test", "SNN/TestSF", "IntDiv", "Filters", "novelty"} <= set(moses)
        assert set(scored["control"]) == {"logp", "tpsa", "mw"}
    assert run["syntax_constrained"] is False and run["constrained"]["syntax_constrained"] is True
    for part, scored in (("", run), ("_constrained", run["constrained"])):
        samples = (tmp_path / "results" / f"molecules_kekule_grammar{part}_samples.smi").read_text().splitlines()
        assert len(samples) == 60 and samples[:20] == scored["examples"]


def test_colour_experiment_tints_trains_and_reports_bits_per_dim(tmp_path):
    from test_data import make_idx_folder

    make_idx_folder(tmp_path / "idx", n_train=48, n_test=16)
    _run(
        "colour_images.py",
        *("--data", str(tmp_path / "idx"), "--train", "40", "--epochs", "1", "--widths", "4,8", "--batch", "8"),
        *("--workdir", str(tmp_path / "runs" / "colour"), "--set", "model.logistic_mixtures=2"),
        tmp_path=tmp_path,
    )
    result = json.loads((tmp_path / "results" / "colour_resnet.json").read_text())
    assert result["train_images"] == 40 and len(result["test_bits_per_dim_by_epoch"]) == 2
    # bits/dim is the test -ELBO in bits per value of the 32x32x3 images, and training lowered it
    assert result["test_bits_per_dim"] == pytest.approx(result["test_neg_elbo"] / (32 * 32 * 3 * np.log(2)), rel=1e-5)
    assert result["test_bits_per_dim_by_epoch"][1] < result["test_bits_per_dim_by_epoch"][0]
    assert (tmp_path / "results" / "colour_resnet_samples.png").stat().st_size > 0
    pictures = np.load(tmp_path / "runs" / "colour_resnet_data.npz")
    assert pictures["x_train"].shape == (40, 32, 32, 3) and pictures["x_train"].dtype == np.uint8
    # a tint keeps each image's grey pattern: its channels are multiples of one grey image
    image = pictures["x_train"][0].astype(float)
    brightest = np.argmax(image.sum(axis=(0, 1)))
    ratio = image / np.maximum(image[..., brightest : brightest + 1], 1)
    assert np.all(ratio <= 1.0 + 1e-9)


def test_the_guidance_weight_is_chosen_on_validation_requests_only():
    """experiments/molecules.py picks the guidance weight from draws asked for the properties of the
    training file's molecules after the first --train: the sweep never sees a test molecule, and it
    takes the smallest weight that reaches the target."""
    pytest.importorskip("rdkit", reason="needs RDKit, the [chem] extra: pip install -e '.[chem]'")
    import sys

    from cvae_jax.data import smiles
    from cvae_jax.molecules import chem

    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import molecules as experiment
    finally:
        sys.path.remove(str(EXPERIMENTS))
    fixtures = Path(__file__).resolve().parent / "data"
    train_csv, test_csv = fixtures / "moses_train_1200.csv.gz", fixtures / "moses_test_400.csv.gz"
    rows = smiles.load_csv(train_csv)
    validation = experiment.validation_molecules(train_csv, 1000)
    assert validation == rows[1000:] and not set(validation) & set(smiles.load_csv(test_csv))

    names = ("logp", "tpsa", "mw")
    props = chem.properties(rows[:1000], names)

    class Units:  # what choose_guidance reads of the prepared data
        mean, std = props.mean(0), props.std(0)

        def __init__(self):
            self.names, self.asked_of = names, []

        def conditions_like(self, reference, num, seed=0):
            self.asked_of.append(list(reference))
            return np.asarray((chem.properties(list(reference), names) - self.mean) / self.std, np.float32)

    units = Units()
    validation_props = chem.properties(validation, names)

    def draw(asked, w):  # a weight >= 0.5 answers every request with the very molecule asked about
        if w >= 0.5:
            requested = np.asarray(asked, np.float64) * units.std + units.mean
            nearest = np.abs(requested[:, None, :] - validation_props[None]).sum(-1).argmin(1)
            return [validation[i] for i in nearest]
        return list(np.random.default_rng(0).permutation(validation))[: len(asked)]

    weight, sweep = experiment.choose_guidance(draw, units, validation, [1.0, 0.0, 0.5], 0.85, seed=0)
    assert units.asked_of == [validation]  # the requests came from validation molecules only
    assert weight == 0.5 and [row["guidance"] for row in sweep] == [0.0, 0.5, 1.0]
    assert sweep[1]["least_r"] == pytest.approx(1.0) and sweep[0]["least_r"] < 0.85
