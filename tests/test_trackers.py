"""Trackers receive every metrics.jsonl line: each is read back from what it wrote, offline."""

import json
import subprocess
import sys

import pytest

from cvae_jax.config import ConfigError, apply_overrides, get_config
from cvae_jax.tasks.images import train_and_evaluate

SMALL = ["model.latent_dim=2", "model.encoder_hidden=16", "model.decoder_hidden=16", "train.epochs=2"]
SMALL += ["train.batch_size=100", "train.tensorboard=false"]


def _lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_mlflow_runs_hold_every_metrics_line_and_resume_into_the_same_run(small_digits, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="the [mlflow] extra")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workdir = tmp_path / "run"
    cfg = apply_overrides(get_config("vae"), [*SMALL, "train.trackers=mlflow", "checkpoint.every_epochs=1"])
    train_and_evaluate(apply_overrides(cfg, ["train.epochs=1"]), workdir, dataset=small_digits, progress=False)
    train_and_evaluate(cfg, workdir, dataset=small_digits, progress=False)  # trained on: the same MLflow run
    run_id = json.loads((workdir / "trackers.json").read_text())["mlflow"]
    client = mlflow.tracking.MlflowClient(tracking_uri=(workdir / "mlruns").resolve().as_uri())
    logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "test/neg_elbo"))
    wanted = sorted((e["step"], e["neg_elbo"]) for e in _lines(workdir) if e["split"] == "test")
    assert [s for s, _ in logged] == [s for s, _ in wanted] and len(wanted) == 3  # epochs 0, 1, 2
    assert [v for _, v in logged] == pytest.approx([v for _, v in wanted], rel=1e-6)
    assert client.get_run(run_id).data.params["model.latent_dim"] == "2"


def _wandb_records(path):
    """The protobuf records of an offline run's .wandb file: a 7-byte header, then LevelDB-style log
    records (crc 4, length 2, type 1: full, first, middle, last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, offset, block, parts, records = path.read_bytes(), 7, 32768, b"", []
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        length, kind = int.from_bytes(data[offset + 4 : offset + 6], "little"), data[offset + 6]
        if kind == 0:
            break
        parts += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


@pytest.mark.slow
def test_wandb_offline_runs_hold_every_metrics_line(small_digits, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the [wandb] extra")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    workdir = tmp_path / "run"
    cfg = apply_overrides(get_config("vae"), [*SMALL, "train.trackers=wandb"])
    train_and_evaluate(cfg, workdir, dataset=small_digits, progress=False)
    (log,) = (workdir / "wandb").glob("offline-run-*/run-*.wandb")
    logged = []
    for record in _wandb_records(log):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            if "test/neg_elbo" in items:
                logged.append((items["_step"], items["test/neg_elbo"]))
    wanted = [(e["step"], e["neg_elbo"]) for e in _lines(workdir) if e["split"] == "test"]
    assert [s for s, _ in logged] == [s for s, _ in wanted] and len(wanted) == 3
    assert [v for _, v in logged] == pytest.approx([v for _, v in wanted], rel=1e-6)


def test_an_unknown_tracker_is_refused_by_name(small_digits, tmp_path):
    cfg = apply_overrides(get_config("vae"), [*SMALL, "train.trackers=comet"])
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        train_and_evaluate(cfg, tmp_path / "run", dataset=small_digits, progress=False)


def test_tensorboard_without_tensorboardx_says_how_to_train_on(tmp_path, monkeypatch):
    """An install without tensorboardX (say --no-deps onto a GPU image) is told both ways forward."""
    from cvae_jax.training import trackers

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install tensorboardX.*train\.tensorboard=false"):
        trackers.REGISTRY.get("tensorboard")(tmp_path, {})
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow  # a fresh process
def test_tensorboard_writer_leaves_torch_unimported_and_importable(tmp_path):
    """tensorboardX imports PyTorch whenever it is installed; the writer is made without it (in a
    fresh process: this one may have imported torch already), and torch can still be imported after
    it. That the events read back is tested where runs write them (tests/test_resnet.py)."""
    pytest.importorskip("torch", reason="the [reference] extra")
    script = f"""
import sys
from cvae_jax.training.tensorboard import summary_writer
with summary_writer({str(tmp_path)!r}) as w:
    w.add_scalar("loss", 2.5, 7)
assert "torch" not in sys.modules, "torch was imported"
import torch
print(torch.zeros(3).shape[0])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "3", proc.stderr[-2000:]
    assert [p.stat().st_size > 0 for p in tmp_path.glob("events.out.tfevents.*")] == [True]
