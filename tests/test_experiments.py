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
        for row in rows:
            for kind in ("nll", "neg_elbo", "recon"):
                assert 0.0 <= row[kind]["auroc"] <= 1.0 and row[kind]["false_positive_rate"] < 0.5
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
    assert run["config"]["representation"] == "kekule" and run["config"]["grammar_features"]
    assert (tmp_path / "runs" / "mol_kekule_grammar" / "config.json").exists()
    for scored, temperature in ((run, 1.0), (run["constrained"], 0.7)):  # free and syntax-constrained samples
        moses = scored["moses"]
        assert scored["temperature"] == temperature and moses["num_samples"] == 60 and 0.0 <= moses["valid"] <= 1.0
        assert {"SNN/Test", "Frag/Test", "SNN/TestSF", "IntDiv", "Filters", "novelty"} <= set(moses) or not moses[
            "valid"
        ]
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
    assert 0 < result["test_bits_per_dim"] < 16
    assert (tmp_path / "results" / "colour_resnet_samples.png").stat().st_size > 0
    pictures = np.load(tmp_path / "runs" / "colour_resnet_data.npz")
    assert pictures["x_train"].shape == (40, 32, 32, 3) and pictures["x_train"].dtype == np.uint8
    # a tint keeps each image's grey pattern: its channels are multiples of one grey image
    image = pictures["x_train"][0].astype(float)
    brightest = np.argmax(image.sum(axis=(0, 1)))
    ratio = image / np.maximum(image[..., brightest : brightest + 1], 1)
    assert np.all(ratio <= 1.0 + 1e-9)
