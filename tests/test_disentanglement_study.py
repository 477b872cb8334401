"""The study script (experiments/disentanglement.py) carries its cells across machines: a cell in the
results file under the same protocol and settings is kept, with its provenance, not trained again,
and the file is rewritten after every cell. Cells are scored by a stand-in here (training them is
the study's own work); what is tested is which cells run and what the file then holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture
def scripts(tmp_path, monkeypatch):
    """experiments/disentanglement.py and its _shared, freshly imported, writing results under tmp_path."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    for name in ("disentanglement", "_shared"):
        sys.modules.pop(name, None)
    import _shared
    import disentanglement

    monkeypatch.setattr(_shared, "RESULTS", tmp_path / "results")
    yield _shared, disentanglement
    for name in ("disentanglement", "_shared"):
        sys.modules.pop(name, None)


@pytest.fixture
def study(tmp_path, monkeypatch, scripts):
    _shared, disentanglement = scripts
    monkeypatch.setattr(disentanglement, "plots", lambda results, agree: None)
    ran = []

    def fake_cell(workdir, model, strength, seed, args):
        ran.append((model, strength, seed, args.steps))
        value = strength / 10 + seed / 100  # distinct per cell, so that the kept values are traceable
        metrics = {metric: {key: value} for metric, key, _ in disentanglement.SCORES}
        return {"metrics": metrics, "steps": args.steps}

    monkeypatch.setattr(disentanglement, "run_cell", fake_cell)

    def run(*argv):
        monkeypatch.setattr(sys, "argv", ["disentanglement.py", "--workdir", str(tmp_path / "runs"), *argv])
        ran.clear()
        disentanglement.main()
        return list(ran), json.loads((tmp_path / "results" / "disentanglement.json").read_text())

    return run


def test_cells_in_the_results_file_are_kept_and_the_rest_run(study):
    ran, first = study("--models", "beta_vae", "--seeds", "0")
    assert ran == [("beta_vae", 2, 0, 3072), ("beta_vae", 8, 0, 3072)]
    assert first["cells_done"] == 2 and all(c["provenance"]["commit"] for c in first["cells"])

    # another machine: no run folders, the file alone; seed 0's cells are kept, seed 1's run
    ran, second = study("--models", "beta_vae", "--seeds", "0", "1", "--workdir", "elsewhere")
    assert ran == [("beta_vae", 2, 1, 3072), ("beta_vae", 8, 1, 3072)]
    assert second["cells_done"] == 4 and second["cells"][:2] == first["cells"]
    assert second["summary"]["beta_vae"]["mig"]["cells"] == 4
    assert second["summary"]["beta_vae"]["mig"]["max"] == pytest.approx(0.8 + 0.01)


def test_cells_of_other_settings_are_not_kept(study):
    study("--models", "beta_vae", "--seeds", "0")
    ran, result = study("--models", "beta_vae", "--seeds", "0", "--steps", "100")
    assert ran == [("beta_vae", 2, 0, 100), ("beta_vae", 8, 0, 100)]  # 3,072-step cells are not 100-step ones
    assert [c["steps"] for c in result["cells"]] == [100, 100]


def test_report_gathers_the_kept_cells_without_running_any(study):
    study("--models", "beta_vae", "--seeds", "0")
    ran, result = study("--models", "beta_vae", "--seeds", "0", "1", "--report")
    assert ran == [] and result["cells_done"] == 2 and result["cells_planned"] == 4


def test_a_study_cut_short_keeps_the_cells_it_finished(study, monkeypatch):
    import disentanglement

    scored = disentanglement.run_cell

    def dies_on_the_second(workdir, model, strength, seed, args):
        if strength == 8:
            raise KeyboardInterrupt
        return scored(workdir, model, strength, seed, args)

    monkeypatch.setattr(disentanglement, "run_cell", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        study("--models", "beta_vae", "--seeds", "0")
    monkeypatch.setattr(disentanglement, "run_cell", scored)
    ran, result = study("--models", "beta_vae", "--seeds", "0")
    assert ran == [("beta_vae", 8, 0, 3072)] and result["cells_done"] == 2


def test_the_plots_are_written_and_leave_no_figure_open(scripts):
    """The study draws its plots after every cell, in one long process: none of its figures stays open."""
    import matplotlib.pyplot as plt

    _shared, disentanglement = scripts
    rng = np.random.default_rng(0)
    results = [
        {"model": model, "metrics": {metric: {key: float(rng.random())} for metric, key, _ in disentanglement.SCORES}}
        for model in ("beta_vae", "factor_vae")
        for _ in range(3)
    ]
    open_before = plt.get_fignums()
    disentanglement.plots(results, disentanglement.agreement(results))
    assert plt.get_fignums() == open_before
    for name in ("disentanglement_metrics", "disentanglement_agreement"):
        assert Path(_shared.picture(name)).stat().st_size > 0
