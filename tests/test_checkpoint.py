"""Checkpoints: exact resume, surviving SIGINT (SIGTERM: test_molecules.py) and SIGKILL (also in the
middle of a save), damaged and incompatible checkpoints, non-finite losses. Every resumed run is
compared bit for bit with one that never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from cvae_jax.config import apply_overrides, get_config
from cvae_jax.data import images as data
from cvae_jax.tasks.images import load, load_run, train_and_evaluate
from cvae_jax.training import checkpoint, resume
from cvae_jax.training.checkpoint import CheckpointError
from cvae_jax.training.trainer import TrainingError

HERE = Path(__file__).parent
SMALL = [
    "model.latent_dim=4",
    "model.encoder_hidden=64",
    "model.decoder_hidden=64",
    "train.batch_size=50",
    "train.eval_batch_size=200",
    "checkpoint.every_epochs=1",
    "data.validation=0",  # the step counts below are of all the training examples
]
TIMING = ("seconds", "samples_per_s", "save_s")


def _cfg(*extra):
    return apply_overrides(get_config("cvae"), SMALL + list(extra))


def _params(workdir) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(load(workdir)[1])]


def _entries(workdir) -> list[dict]:
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in lines
        if json.loads(line)["split"] != "checkpoint"
    ]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, small_digits):
    """4 epochs without stopping (10 steps per epoch; 3 steps per compiled call, so calls end mid-epoch)."""
    workdir = tmp_path_factory.mktemp("straight") / "run"
    train_and_evaluate(_cfg("train.epochs=4", "train.steps_per_call=3"), workdir, dataset=small_digits, progress=False)
    return workdir


def test_resume_after_k_epochs_is_bit_identical(straight, small_digits, tmp_path):
    workdir = tmp_path / "run"
    train_and_evaluate(_cfg("train.epochs=2", "train.steps_per_call=3"), workdir, dataset=small_digits, progress=False)
    assert checkpoint.has_checkpoint(workdir)
    run = train_and_evaluate(
        _cfg("train.epochs=4", "train.steps_per_call=3"), workdir, dataset=small_digits, progress=False
    )
    assert int(run.state.step) == 40
    assert _same(_params(workdir), _params(straight))
    assert _entries(workdir) == _entries(straight)  # every train and test metric, to the last bit


def test_a_stop_signal_in_the_last_epoch_stops_the_caller_too(small_digits, tmp_path, monkeypatch):
    """A signal that arrives in the last epoch is not swallowed because the training is done: the run
    saves its last checkpoint and raises Interrupted, so that the program around it (the next cell of
    a study, the scoring) stops as asked; running it again finds the training complete."""
    from cvae_jax.training import trainer

    evaluate = trainer._Loop.evaluate

    def signalled_in_the_last_epoch(self, epoch):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to this (main) thread before kill returns
        return evaluate(self, epoch)

    monkeypatch.setattr(trainer._Loop, "evaluate", signalled_in_the_last_epoch)
    config, workdir = _cfg("train.epochs=2", "train.steps_per_call=3"), tmp_path / "run"
    with pytest.raises(resume.Interrupted, match="stopped by SIGINT at step 20"):
        train_and_evaluate(config, workdir, dataset=small_digits, progress=False)
    assert checkpoint.Checkpoints(workdir, read_only=True).latest_step() == 20
    monkeypatch.setattr(trainer._Loop, "evaluate", evaluate)
    run = train_and_evaluate(config, workdir, dataset=small_digits, progress=False)
    assert int(run.state.step) == 20
    assert [e["epoch"] for e in _entries(workdir) if e["split"] == "train"] == [1, 2]  # nothing trained again


def test_every_steps_saves_mid_epoch_and_a_crash_there_resumes_exactly(straight, small_digits, tmp_path, monkeypatch):
    """checkpoint.every_steps=4 saves at the end of each call (3 steps) that reaches a multiple of 4,
    mid-epoch too; a process that dies after a mid-epoch save resumes there, bit for bit."""
    from cvae_jax.training import trainer

    save, saved = trainer._Loop.save, []

    def dies_after_the_fourth_save(self, *args, **kwargs):
        save(self, *args, **kwargs)
        saved.append(int(self.state.step))
        if len(saved) == 4:
            self.ckpts.wait()
            raise RuntimeError("power cut")

    monkeypatch.setattr(trainer._Loop, "save", dies_after_the_fourth_save)
    config = _cfg("train.epochs=4", "train.steps_per_call=3", "checkpoint.every_steps=4", "checkpoint.keep=10")
    workdir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="power cut"):
        train_and_evaluate(config, workdir, dataset=small_digits, progress=False)
    # calls end at 3, 6, 9, 10 | 13, ... (10 steps an epoch): 6, 9 and 13 reach 4, 8 and 12; 10 ends epoch 1
    assert saved == [6, 9, 10, 13]
    with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
        assert ckpts.read_meta(13)["position"] == {"epoch": 2, "batch": 3}
    monkeypatch.setattr(trainer._Loop, "save", save)
    run = train_and_evaluate(config, workdir, dataset=small_digits, progress=False)
    assert int(run.state.step) == 40
    assert _same(_params(workdir), _params(straight))
    assert _entries(workdir) == _entries(straight)


def test_every_steps_sets_the_call_length_when_steps_per_call_is_auto(small_digits, tmp_path):
    config = _cfg("train.epochs=1", "checkpoint.every_epochs=0", "checkpoint.every_steps=4", "checkpoint.keep=10")
    train_and_evaluate(config, tmp_path / "run", dataset=small_digits, progress=False)
    with checkpoint.Checkpoints(tmp_path / "run", read_only=True) as ckpts:
        assert ckpts.steps() == [4, 8, 10]  # calls of 4 steps, then the epoch's last 2 (saved at the end)


def test_keeps_last_k_and_without_validation_no_best(straight):
    """A run without validation rows keeps the last K checkpoints and scores none of them: the test
    split never chooses a checkpoint, so asking for "best" is refused, naming what to do instead
    (tests/test_validation.py: with validation rows, "best" follows them)."""
    with checkpoint.Checkpoints(straight, read_only=True) as ckpts:
        assert ckpts.steps() == [20, 30, 40]  # keep=3 (the default) latest, nothing kept as "best"
        assert all(ckpts.read_meta(step)["metrics"] is None for step in ckpts.steps())
        with pytest.raises(CheckpointError, match=r"no 'best' checkpoint.*--checkpoint latest.*data.validation"):
            ckpts.best_step()
        meta = ckpts.read_meta(40)
    assert meta["position"] == {"epoch": 5, "batch": 0} and meta["num_devices"] == 1
    assert len(meta["data_fingerprint"]) == 64 and meta["config"]["train"]["epochs"] == 4
    assert load_run(straight).step == 40
    with pytest.raises(CheckpointError, match="trained without validation data"):
        load_run(straight, "best")


def _cli(workdir: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "cvae_jax",
        "train",
        "--workdir",
        str(workdir),
        "--no-progress",
        "--set",
        "data.source=embedded",
        *[f"--set={s}" for s in SMALL],
        "--epochs",
        "6",
        "--set",
        "train.steps_per_call=3",
        *extra,
    ]


def _start(args: list[str]) -> subprocess.Popen:
    # The same environment as the straight and the resumed runs: on a GPU machine a run started with
    # JAX_PLATFORMS=cpu trained its first steps on the CPU, whose numbers differ from the GPU's in the
    # last bits (seen on an H200), and the resume could not be bit-identical.
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(workdir: Path, proc: subprocess.Popen, count: int = 1, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = (
            [p for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
            if (workdir / "checkpoints").is_dir()
            else []
        )
        if len(done) >= count:
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def cli_straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli") / "straight"
    proc = subprocess.run([sys.executable, *_cli(workdir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return workdir


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_record_the_first_signal_and_restore_the_handlers(sig):
    before = signal.getsignal(sig)
    with resume.StopSignals() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), sig)  # delivered to this (main) thread before kill returns
        os.kill(os.getpid(), signal.SIGTERM if sig == signal.SIGINT else signal.SIGINT)
        assert stop.requested() and stop.signum == sig  # the first one is the one reported
    assert signal.getsignal(sig) is before


@pytest.mark.slow
def test_signal_saves_and_exits_cleanly_then_resumes_exactly(cli_straight, tmp_path):
    """SIGINT here; SIGTERM, which `resume.StopSignals` handles the same way, is sent to a molecule run
    (tests/test_molecules.py) through the same trainer, so each signal is tested end to end once."""
    sig = signal.SIGINT
    workdir = tmp_path / "run"
    proc = _start(_cli(workdir))
    _wait_for_checkpoint(workdir, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err
    stopped_at = checkpoint.Checkpoints(workdir, read_only=True).latest_step()
    assert stopped_at is not None and stopped_at < 6 * 80  # 4000 examples / 50 = 80 steps per epoch
    again = subprocess.run([sys.executable, *_cli(workdir)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stderr
    assert _same(_params(workdir), _params(cli_straight))
    assert _entries(workdir) == _entries(cli_straight)


@pytest.mark.slow
def test_sigkill_during_training_resumes_from_the_last_checkpoint(cli_straight, tmp_path):
    """A second `cvae-jax train` on the run directory in use is refused at once, naming the first
    process; after the first is killed with SIGKILL its lock holds nothing back and a new run resumes.

    The first run is paused (SIGSTOP) while the second starts: it still holds the lock, and it cannot
    finish its training, and let go of the lock, before the second looks (a fast machine did so)."""
    workdir = tmp_path / "run"
    proc = _start(_cli(workdir))
    _wait_for_checkpoint(workdir, proc, count=2)
    proc.send_signal(signal.SIGSTOP)
    start = time.perf_counter()
    second = subprocess.run([sys.executable, *_cli(workdir)], capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and f"is in use by process {proc.pid}" in second.stderr, second.stderr[-2000:]
    assert "Traceback" not in second.stderr and time.perf_counter() - start < 60  # before any compiling
    assert proc.poll() is None  # the first one is untouched by the refused second
    proc.kill()  # SIGKILL ends a stopped process too
    proc.communicate()
    again = subprocess.run([sys.executable, *_cli(workdir)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _same(_params(workdir), _params(cli_straight))
    assert _entries(workdir) == _entries(cli_straight)  # lines of redone epochs were not duplicated


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_save_keeps_the_previous_checkpoint(cli_straight, tmp_path):
    workdir = tmp_path / "run"
    # The helper SIGKILLs its own process right after the 3rd save has started writing (async).
    proc = subprocess.run(
        [sys.executable, str(HERE / "kill_during_save.py"), "3", *_cli(workdir)[2:]], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
        assert ckpts.steps() == [80, 160]  # the interrupted save (step 240) is not listed
    leftovers = [p.name for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]
    assert any("tmp" in name for name in leftovers), leftovers  # it really was cut off mid-write
    again = subprocess.run([sys.executable, *_cli(workdir)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _same(_params(workdir), _params(cli_straight))


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_damaged_checkpoint_is_a_clear_error_never_a_partial_restore(straight, tmp_path):
    workdir = _copy(straight, tmp_path / "run")
    files = sorted(
        p for p in (workdir / "checkpoints" / "40" / "state").rglob("*") if p.is_file() and p.stat().st_size > 1000
    )
    assert files
    for f in files:  # flip bytes in the middle of every array file
        raw = bytearray(f.read_bytes())
        mid = len(raw) // 2
        raw[mid : mid + 64] = bytes(b ^ 0xFF for b in raw[mid : mid + 64])
        f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checkpoint 40 .*(damaged|cannot be restored)"):
        load(workdir)
    assert load_run(workdir, 30).step == 30  # earlier checkpoints still load


def test_truncated_and_missing_pieces_are_clear_errors(straight, tmp_path):
    workdir = _copy(straight, tmp_path / "run")
    (workdir / "checkpoints" / "40" / "meta" / "metadata").write_text('{"config": ')
    with pytest.raises(CheckpointError, match="cannot read checkpoint 40"):
        load(workdir)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no checkpoint at step 7"):
        load_run(straight, 7)


def test_a_checkpoint_of_the_old_format_is_named_as_such(straight, tmp_path):
    workdir = _copy(straight, tmp_path / "run")
    meta_file = workdir / "checkpoints" / "40" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    for field in ("checksum", "position", "partial_sums"):  # what the pre-resume format lacked
        meta.pop(field, None)
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="checkpoint 40 .* was written by an older cvae_jax"):
        load(workdir)


def test_resuming_with_another_architecture_or_data_names_the_mismatch(straight, small_digits, digits, tmp_path):
    workdir = _copy(straight, tmp_path / "run")
    before = (workdir / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match=r"model.latent_dim: 4 -> 8"):
        train_and_evaluate(_cfg("train.epochs=5", "model.latent_dim=8"), workdir, dataset=small_digits, progress=False)
    with pytest.raises(CheckpointError, match=r"model.encoder_hidden: \[64\] -> \[32\]"):
        train_and_evaluate(
            _cfg("train.epochs=5", "model.encoder_hidden=32"), workdir, dataset=small_digits, progress=False
        )
    with pytest.raises(CheckpointError, match="trained on other data"):
        train_and_evaluate(_cfg("train.epochs=5"), workdir, dataset=digits, progress=False)
    assert (workdir / "metrics.jsonl").read_text() == before  # nothing was touched


@pytest.mark.slow
def test_a_cyclical_run_trains_on_only_with_its_cycles_kept(small_digits, tmp_path):
    """2 cycles over 2 epochs of 10 steps: 10-step cycles. Training on to 4 epochs would stretch them
    to 20 steps mid-run, so it is refused; with train.cycle_steps=10 it goes on exactly as a run that
    had 10-step cycles from the start."""
    cyclical = ("train.kl_schedule=cyclical", "train.num_cycles=2")
    workdir = tmp_path / "run"
    train_and_evaluate(_cfg("train.epochs=2", *cyclical), workdir, dataset=small_digits, progress=False)
    before = (workdir / "metrics.jsonl").read_text()
    with pytest.raises(
        CheckpointError,
        match=r"KL cycles are 10 steps long .* would be 20 steps .* "
        r"train.cycle_steps=10.0",
    ):
        train_and_evaluate(_cfg("train.epochs=4", *cyclical), workdir, dataset=small_digits, progress=False)
    assert (workdir / "metrics.jsonl").read_text() == before
    kept = _cfg("train.epochs=4", *cyclical, "train.cycle_steps=10")
    train_and_evaluate(kept, workdir, dataset=small_digits, progress=False)
    train_and_evaluate(kept, tmp_path / "straight", dataset=small_digits, progress=False)
    assert _entries(workdir) == _entries(tmp_path / "straight")
    assert _same(_params(workdir), _params(tmp_path / "straight"))


def _poisoned(small_digits) -> data.Dataset:
    images = small_digits.train.images.copy()
    images[17] = np.nan  # one poisoned example: one non-finite batch per epoch
    return data.Dataset(
        train=data.Split(images, small_digits.train.labels), test=small_digits.test, num_classes=10, name="poisoned"
    )


def test_nan_loss_stops_with_a_clear_error_and_saves_nothing(small_digits, tmp_path):
    with pytest.raises(TrainingError, match="non-finite .* in epoch 1.*train.on_nonfinite=skip"):
        train_and_evaluate(_cfg("train.epochs=2"), tmp_path / "run", dataset=_poisoned(small_digits), progress=False)
    assert not checkpoint.has_checkpoint(tmp_path / "run")


@pytest.mark.slow
def test_nan_loss_skip_mode_skips_exactly_the_poisoned_steps(small_digits, tmp_path):
    run = train_and_evaluate(
        _cfg("train.epochs=3", "train.on_nonfinite=skip"),
        tmp_path / "run",
        dataset=_poisoned(small_digits),
        progress=False,
    )
    train = [e for e in run.history if e["split"] == "train"]
    assert [e["skipped_steps"] for e in train] == [1, 1, 1]  # the poisoned example's batch, once per epoch
    assert all(np.isfinite(e["neg_elbo"]) for e in run.history if "neg_elbo" in e)
    tests = [e["neg_elbo"] for e in run.history if e["split"] == "test"]
    assert tests[-1] < 0.8 * tests[0]  # it still trained
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(load(tmp_path / "run")[1]))


def test_a_non_finite_state_is_never_saved(straight, tmp_path):
    run = load_run(straight)
    from cvae_jax.tasks.images import build, init_for

    parts = build(run.config, (28, 28, 1), 10)
    state = init_for(parts, run.config, (28, 28, 1), 10)
    bad = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
    with checkpoint.Checkpoints(tmp_path / "w") as ckpts:
        with pytest.raises(CheckpointError, match="non-finite"):
            ckpts.save(bad, np.zeros(2, np.uint32), {})
        assert ckpts.steps() == []


@pytest.mark.slow
def test_a_run_directory_in_use_is_refused_and_a_killed_holder_leaves_no_lock(small_digits, tmp_path):
    from cvae_jax.training.lock import WorkdirInUse

    workdir = tmp_path / "run"
    hold = "import sys, time; from cvae_jax.training.lock import WorkdirLock; "
    hold += "held = WorkdirLock(sys.argv[1]).__enter__(); print('held', flush=True); time.sleep(600)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(workdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirInUse, match=rf"in use by process {holder.pid} on .*another --workdir"):
            train_and_evaluate(_cfg("train.epochs=1"), workdir, dataset=small_digits, progress=False)
        assert not checkpoint.has_checkpoint(workdir)  # refused before anything was written
    finally:
        holder.kill()
        holder.wait()
    run = train_and_evaluate(_cfg("train.epochs=1"), workdir, dataset=small_digits, progress=False)
    assert int(run.state.step) == 10 and checkpoint.has_checkpoint(workdir)
