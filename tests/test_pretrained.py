"""Model folders: `cvae-jax export` writes weights, config, metadata and a model card from a run, and
`from_pretrained` (and every command's --pretrained) gives back the very same model."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cvae_jax import from_pretrained
from cvae_jax.apps import hub, pretrained
from cvae_jax.cli import main
from cvae_jax.tasks.images import load_run

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "cvae"
    argv = ["train", "--epochs", "2", "--workdir", str(workdir), "--no-progress", "--set", "model.latent_dim=4"]
    assert main([*argv, "--set", "model.encoder_hidden=32", "--set", "model.decoder_hidden=32"]) == 0
    return workdir


def test_export_writes_a_folder_whose_weights_and_card_come_from_the_run(image_run, tmp_path):
    out = tmp_path / "digits-small"
    assert main(["export", "--workdir", str(image_run), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= set(pretrained.FILES) | {"provenance.jsonl"}
    meta = json.loads((out / "meta.json").read_text())
    run = load_run(image_run, "best")
    assert meta["task"] == "images" and meta["checkpoint"] == "best" and meta["step"] == run.step
    lines = [json.loads(line) for line in (image_run / "metrics.jsonl").read_text().splitlines()]
    test_line = next(e for e in lines if e["split"] == "test" and e["step"] == run.step)
    assert meta["metrics"]["test"]["neg_elbo"] == test_line["neg_elbo"]
    card = (out / "README.md").read_text()
    for heading in (
        "## Load it",
        "## Data",
        "## Training",
        "## Metrics at this checkpoint",
        "## Intended use",
        "## Limits",
    ):
        assert heading in card
    started = json.loads((image_run / "provenance.jsonl").read_text().splitlines()[0])
    assert f"{test_line['neg_elbo']:.4g}" in card and started["command"] in card and started["commit"] in card
    loaded = from_pretrained(out)
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(a, b)
    # every command that reads a run reads the folder alike: the same samples, bit for bit
    by_run, by_folder = tmp_path / "a.npy", tmp_path / "b.npy"
    assert (
        main(["sample", "--workdir", str(image_run), "--checkpoint", "best", "--label", "3", "--out", str(by_run)]) == 0
    )
    assert main(["sample", "--pretrained", str(out), "--label", "3", "--seed", "0", "--out", str(by_folder)]) == 0
    np.testing.assert_array_equal(np.load(by_run), np.load(by_folder))
    # export refuses a folder in use, and leaves it alone
    assert main(["export", "--workdir", str(image_run), "--out", str(out)]) == 2
    assert json.loads((out / "meta.json").read_text()) == meta


def test_a_damaged_folder_is_refused_with_a_clear_error(image_run, tmp_path):
    from safetensors.numpy import load_file, save_file

    out = pretrained.export(image_run, tmp_path / "m")
    weights = load_file(str(out / "params.safetensors"))
    weights.pop(next(iter(weights)))
    save_file(weights, str(out / "params.safetensors"))
    with pytest.raises(ValueError, match="do not fit"):
        from_pretrained(out)
    with pytest.raises(FileNotFoundError, match="no pretrained model"):
        from_pretrained(tmp_path / "nowhere")


def test_the_hub_upload_sends_the_folder_s_files_and_needs_its_extra(image_run, tmp_path, monkeypatch):
    out = pretrained.export(image_run, tmp_path / "m")
    assert hub.upload_files(out) == sorted(p.name for p in out.iterdir())
    (out / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        hub.upload_files(out)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the extra not installed: a clear error, no network
    with pytest.raises(ImportError, match=r"\[hub\]"):
        hub.download("org/name")


@pytest.mark.slow
def test_a_molecule_model_round_trips_through_its_folder(tmp_path):
    pytest.importorskip("rdkit")
    from cvae_jax import molecules

    workdir, out = tmp_path / "mol", tmp_path / "mol-model"
    argv = ["train-molecules", "--train-csv", str(DATA / "moses_train_1200.csv.gz"), "--test-csv"]
    argv += [str(DATA / "moses_test_400.csv.gz"), "--workdir", str(workdir), "--num-train", "256", "--num-test", "64"]
    assert main([*argv, "--epochs", "1", "--latent-dim", "4", "--decoder-hidden", "16", "--no-progress"]) == 0
    assert main(["export", "--workdir", str(workdir), "--out", str(out)]) == 0
    model, params, data = molecules.load(workdir, "best")
    loaded = from_pretrained(out)
    assert loaded.task == "molecules" and loaded.data.vocab == data.vocab
    key, condition = jax.random.key(1), data.condition_for({"logp": 2.0}, 20)
    assert molecules.generate(loaded.model, loaded.params, key, condition, loaded.data.vocab) == molecules.generate(
        model, params, key, condition, data.vocab
    )
    drawn = tmp_path / "m.smi"
    assert (
        main(["sample-molecules", "--pretrained", str(out), "--num", "5", "--property", "logp=2", "--out", str(drawn)])
        == 0
    )
    assert len(drawn.read_text().splitlines()) == 5
    assert "## Limits" in (out / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", pretrained.names())
def test_a_shipped_model_reproduces_the_run_it_came_from(name):
    """The numbers the run gave at export (meta.json "check"), from the shipped weights."""
    loaded = from_pretrained(name)
    check = loaded.meta["check"]
    if loaded.task == "images":
        from cvae_jax.apps import inference

        model, classes = loaded.model, loaded.meta["num_classes"]
        condition = inference.condition_for(model, check["labels"] if model.conditional else None, classes, 8)
        drawn = np.asarray(inference.sample(model, loaded.params, jax.random.key(check["seed"]), 8, condition))
        np.testing.assert_allclose(drawn.reshape(8, -1).mean(1), check["sample_means"], rtol=1e-5, atol=1e-6)
    else:
        again = pretrained.molecule_check(loaded.model, loaded.params, loaded.data, np.asarray(check["tokens"]))
        assert again["smiles"] == check["smiles"]
        np.testing.assert_allclose(again["neg_elbo"], check["neg_elbo"], rtol=1e-4)
    card = (loaded.folder / "README.md").read_text()
    assert card.startswith(f"# {name}") and "## Limits" in card
    assert sum(p.stat().st_size for p in pretrained.SHIPPED.rglob("*") if p.is_file()) < 10e6  # the wheel stays lean


def test_a_custom_task_round_trips_through_its_folder(tmp_path):
    """The ring task of experiments/custom_task_points.py: exported and loaded by its class."""
    import importlib.util

    from cvae_jax.config import TrainConfig
    from cvae_jax.training.trainer import fit

    spec = importlib.util.spec_from_file_location(
        "ring_points", DATA.parent.parent / "experiments" / "custom_task_points.py"
    )
    points = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(points)
    config = points.RingConfig(num_points=512, train=TrainConfig(epochs=2, batch_size=64))
    fitted = fit(points.RingTask(config), tmp_path / "ring", progress=False)
    with pytest.raises(ValueError, match="not registered by name"):
        pretrained.export(tmp_path / "ring", tmp_path / "nope")
    out = pretrained.export(tmp_path / "ring", tmp_path / "ring-model", task_class=points.RingTask)
    loaded = from_pretrained(out, task_class=points.RingTask)
    assert loaded.config == config and loaded.task == "ring"
    for a, b in zip(jax.tree.leaves(fitted.state.params), jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(a, b)
