"""The command line end to end: train writes config, metrics and pictures; sample writes images."""

import json

import numpy as np
import pytest

from cvae_jax.cli import main

METRIC_KEYS = {"epoch", "split", "neg_elbo", "recon", "kl"}


@pytest.fixture(scope="module")
def article_cvae_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "article_cvae"
    code = main(
        [
            "train",
            "--preset",
            "article",
            "--epochs",
            "1",
            "--batch-size",
            "200",
            "--workdir",
            str(workdir),
            "--no-progress",
            "--set",
            "seed=5",
        ]
    )
    assert code == 0
    return workdir


@pytest.mark.slow
def test_train_writes_config_metrics_and_pictures(article_cvae_run):
    config = json.loads((article_cvae_run / "config.json").read_text())
    assert config["model"]["kind"] == "cvae" and config["train"]["epochs"] == 1 and config["seed"] == 5
    lines = [json.loads(line) for line in (article_cvae_run / "metrics.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e["split"]) for e in lines] == [
        (0, "validation"),
        (0, "test"),
        (1, "train"),
        (1, "validation"),
        (1, "test"),
        (1, "checkpoint"),
    ]
    for entry in lines[:-1]:
        assert METRIC_KEYS <= set(entry)
        assert entry["neg_elbo"] == pytest.approx(entry["recon"] + entry["kl"], rel=1e-5)
    for name in ("reconstructions.png", "samples.png", "class_grid.png", "latent_scatter.png", "manifold.png"):
        assert (article_cvae_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_sample_by_label(article_cvae_run, tmp_path):
    out = tmp_path / "s.npy"
    assert main(["sample", "--workdir", str(article_cvae_run), "--num", "7", "--label", "3", "--out", str(out)]) == 0
    images = np.load(out)
    assert images.shape == (7, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    # Different latent draws give different images.
    assert np.abs(images[0] - images[1]).max() > 1e-3


@pytest.mark.slow
def test_sample_errors(article_cvae_run, tmp_path, capsys):
    assert (
        main(
            [
                "sample",
                "--workdir",
                str(article_cvae_run),
                "--num",
                "2",
                "--label",
                "10",
                "--out",
                str(tmp_path / "x.npy"),
            ]
        )
        == 2
    )
    assert "--label 10 is out of range" in capsys.readouterr().err
    assert main(["sample", "--workdir", str(article_cvae_run), "--num", "2", "--out", str(tmp_path / "x.npy")]) == 2
    assert "--label" in capsys.readouterr().err
    assert main(["sample", "--workdir", str(tmp_path / "none"), "--num", "2", "--out", str(tmp_path / "x.npy")]) == 2
    assert "none' does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "sample",
                "--workdir",
                str(article_cvae_run),
                "--num",
                "2",
                "--label",
                "1",
                "--checkpoint",
                "last",
                "--out",
                str(tmp_path / "x.npy"),
            ]
        )
        == 2
    )
    assert "checkpoint must be 'latest', 'best' or a step number (kept: [18]), got 'last'" in capsys.readouterr().err
    # An existing folder as --out: refused by name (np.save would have written <folder>.npy and said otherwise).
    assert (
        main(["sample", "--workdir", str(article_cvae_run), "--num", "2", "--label", "1", "--out", str(tmp_path)]) == 2
    )
    assert f"--out {str(tmp_path)!r} is a directory" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()) and not tmp_path.with_name(tmp_path.name + ".npy").exists()
    # A file where --out's folder would be: refused by name before any sampling.
    (tmp_path / "f").write_text("x")
    assert (
        main(
            [
                "sample",
                "--workdir",
                str(article_cvae_run),
                "--num",
                "2",
                "--label",
                "1",
                "--out",
                str(tmp_path / "f" / "x.npy"),
            ]
        )
        == 2
    )
    assert f"cannot be written: {str(tmp_path / 'f')!r} is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.slow
def test_outputs_are_written_at_exactly_the_path_given(article_cvae_run, tmp_path, capsys):
    # np.save alone appends .npy to other names; the command writes (and reports) the very path asked for,
    # creating its folder, and replaces an existing file whole -- also when it is the command's own input.
    out = tmp_path / "new" / "digits.bin"
    assert main(["sample", "--workdir", str(article_cvae_run), "--num", "3", "--label", "4", "--out", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits.bin"]
    images = np.load(out)
    assert images.shape == (3, 28, 28)
    assert (
        main(
            [
                "translate",
                "--workdir",
                str(article_cvae_run),
                "--input",
                str(out),
                "--source-label",
                "4",
                "--target-label",
                "7",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    translated = np.load(out)
    assert translated.shape == images.shape and not np.array_equal(translated, images)
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits.bin"]  # no temporary file left behind
    # A score file named .json keeps its own contents: the summary goes next to it.
    scores = tmp_path / "scores.json"
    assert (
        main(
            [
                "score",
                "--workdir",
                str(article_cvae_run),
                "--input",
                str(out),
                "--labels",
                "7",
                "--kind",
                "recon",
                "--out",
                str(scores),
            ]
        )
        == 0
    )
    assert np.load(scores).shape == (3,)
    assert json.loads((tmp_path / "scores.json.json").read_text())["num_inputs"] == 3


@pytest.mark.slow
def test_train_on_a_finished_run_resumes_it_and_never_overwrites(article_cvae_run, capsys):
    before = (article_cvae_run / "metrics.jsonl").read_text()
    # Same run, nothing left to do: the saved config is used (no --preset given) and nothing changes.
    assert main(["train", "--workdir", str(article_cvae_run), "--no-progress"]) == 0
    assert "resuming cvae (article preset)" in capsys.readouterr().err
    assert (article_cvae_run / "metrics.jsonl").read_text() == before
    # Another architecture: refused, naming the field, before any work.
    assert main(["train", "--workdir", str(article_cvae_run), "--no-progress", "--set", "model.latent_dim=8"]) == 2
    assert "model.latent_dim: 2 -> 8" in capsys.readouterr().err
    assert (article_cvae_run / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_unconditional_vae_samples(tmp_path):
    workdir = tmp_path / "vae"
    assert (
        main(
            [
                "train",
                "--model",
                "vae",
                "--epochs",
                "1",
                "--workdir",
                str(workdir),
                "--no-progress",
                "--set",
                "model.latent_dim=2",
                "--set",
                "model.encoder_hidden=64",
                "--set",
                "model.decoder_hidden=64",
            ]
        )
        == 0
    )
    assert (workdir / "manifold.png").exists() and not (workdir / "class_grid.png").exists()
    out = tmp_path / "v.npy"
    assert main(["sample", "--workdir", str(workdir), "--num", "3", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 28, 28)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.beta=-2"], "train.beta must be >= 0"),
        (["--batch-size", "5000"], "train.batch_size=5000 is larger than the 3600 training examples"),
        (["--set", "data.source=npz", "--set", "data.path=/no/such.npz"], "does not exist"),
    ],
)
def test_train_bad_input_fails_before_work(tmp_path, capsys, args, message):
    assert main(["train", "--workdir", str(tmp_path / "w"), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_writes_json(article_cvae_run, tmp_path):
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--workdir",
                str(article_cvae_run),
                "--num-importance-samples",
                "40",
                "--chunk",
                "20",
                "--num-examples",
                "30",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["num_examples"] == 30 and result["num_importance_samples"] == 40 and result["conditional"]
    # The 40-sample importance bound is tighter than the ELBO on average; bits/dim is the NLL rescaled.
    assert result["nll"] < result["neg_elbo"]
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (784 * np.log(2)), rel=1e-6)
    assert 0 <= result["active_units"] <= result["latent_dim"] == 2
    assert (
        main(["evaluate", "--workdir", str(article_cvae_run), "--num-importance-samples", "30", "--chunk", "20"]) == 2
    )


@pytest.mark.parametrize("flag", ["--chunk", "--num-examples", "--num-importance-samples"])
def test_evaluate_refuses_a_count_below_one(tmp_path, capsys, flag):
    # Checked before the run is even looked for (it does not exist here).
    assert main(["evaluate", "--workdir", str(tmp_path / "none"), flag, "0"]) == 2
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
