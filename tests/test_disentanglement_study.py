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
        # as run_cell's: `seed` is the metrics' (evaluate_run's), the provenance this process's
        return {"seed": 0, "metrics": metrics, "steps": args.steps, "provenance": _shared.STAMP}

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
    assert [(c["seed"], c["metric_seed"]) for c in second["cells"]] == [(0, 0), (0, 0), (1, 0), (1, 0)]
    assert [c["metrics"]["mig"]["discrete_mig"] for c in second["cells"]] == pytest.approx([0.2, 0.8, 0.21, 0.81])

    # the same machine again: every cell is kept from the file, each under its own seed
    ran, third = study("--models", "beta_vae", "--seeds", "0", "1", "--workdir", "elsewhere")
    assert ran == [] and third["cells"] == second["cells"]
    assert second["summary"]["beta_vae"]["mig"]["cells"] == 4
    assert second["summary"]["beta_vae"]["mig"]["max"] == pytest.approx(0.8 + 0.01)


def test_the_file_is_written_once_per_cell_run_and_once_for_kept_cells_after_them(study, scripts, monkeypatch):
    _, disentanglement = scripts
    save, saves = disentanglement.save, []
    monkeypatch.setattr(
        disentanglement, "save", lambda results, args: saves.append(len(results)) or save(results, args)
    )
    study("--models", "beta_vae", "--seeds", "1")
    assert saves == [1, 2]  # after each cell, not again at the end
    saves.clear()
    study("--models", "beta_vae", "--seeds", "0", "1")  # seed 0 runs, then seed 1's cells are kept
    assert saves == [1, 2, 4]


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


def legacy_file(disentanglement, results_dir, count, models=None):
    """A results file as the study wrote it before `metric_seed`: the metrics' seed 0 in every `seed`;
    `models`, those of a run of some models only (a file of the whole study names none)."""

    def metrics(value):
        return {metric: {key: value} for metric, key, _ in disentanglement.SCORES}

    cells = [
        {"model": model, "strength": strength, "seed": 0, "metrics": metrics(i / 100), "steps": 3072}
        for i, (model, strength) in enumerate(
            (m, s)
            for _ in range(2)
            for m in models or disentanglement.MODELS
            for s in disentanglement.strengths(m, "cpu")
        )
    ][:count]
    settings = {**disentanglement.PROTOCOLS["cpu"], "batch_size": disentanglement.BATCH}
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = {"commit": "abc", "command": "python experiments/disentanglement.py", "host": "h"}
    saved = {"protocol": "cpu", "settings": settings, "cells": cells, "provenance": stamp}
    if models:
        saved["strengths"] = {m: {} for m in models}
    (results_dir / "disentanglement.json").write_text(json.dumps(saved))
    return cells


def test_a_file_from_before_metric_seed_gets_its_training_seeds_from_the_study_order(study, scripts, tmp_path):
    _shared, disentanglement = scripts
    cells = legacy_file(disentanglement, _shared.RESULTS, 12)  # seed 0's ten cells, then two of seed 1
    kept = disentanglement.recorded(type("Args", (), {"protocol": "cpu", "steps": 3072, "seeds": [0, 1, 2]}))
    assert list(kept) == [f"{c['model']}_{c['strength']:g}_seed{i // 10}" for i, c in enumerate(cells)]
    assert [k["metrics"] for k in kept.values()] == [c["metrics"] for c in cells]  # no cell lost or swapped
    assert {(k["metric_seed"], k["provenance"]["commit"]) for k in kept.values()} == {(0, "abc")}

    ran, result = study("--report")
    assert ran == [] and [c["seed"] for c in result["cells"]] == [0] * 10 + [1, 1]


def test_a_file_from_before_metric_seed_of_some_models_follows_their_order(scripts):
    _shared, disentanglement = scripts
    legacy_file(disentanglement, _shared.RESULTS, 6, models=["dip_vae_ii", "beta_vae"])
    kept = disentanglement.recorded(type("Args", (), {"protocol": "cpu", "steps": 3072, "seeds": [0, 1, 2]}))
    assert list(kept) == [
        *("dip_vae_ii_1_seed0", "dip_vae_ii_10_seed0", "beta_vae_2_seed0", "beta_vae_8_seed0"),
        *("dip_vae_ii_1_seed1", "dip_vae_ii_10_seed1"),
    ]


def test_a_file_from_before_metric_seed_out_of_the_study_order_is_refused(scripts):
    _shared, disentanglement = scripts
    cells = legacy_file(disentanglement, _shared.RESULTS, 3)
    path = _shared.RESULTS / "disentanglement.json"
    saved = json.loads(path.read_text())
    saved["cells"] = [cells[1], cells[0], cells[2]]
    path.write_text(json.dumps(saved))
    before = path.read_bytes()
    with pytest.raises(SystemExit, match="cell 0 is beta_vae 8, but the study's order has beta_vae 2"):
        disentanglement.recorded(type("Args", (), {"protocol": "cpu", "steps": 3072, "seeds": [0, 1, 2]}))
    assert path.read_bytes() == before  # the file is left as it was


def test_a_scored_run_folder_is_read_back_with_the_provenance_of_its_last_start(scripts, tmp_path):
    """Run folders scored before cells kept their own provenance: the last start of the run scored it."""
    _, disentanglement = scripts
    workdir = tmp_path / "cell"
    workdir.mkdir()
    (workdir / "disentanglement.json").write_text(json.dumps({"seed": 0, "metrics": {}, "steps": 3072}))
    starts = [{"commit": "first", "resumed_from_step": None}, {"commit": "second", "resumed_from_step": 100}]
    (workdir / "provenance.jsonl").write_text("".join(json.dumps(s) + "\n" for s in starts))
    scores = disentanglement.run_cell(workdir, "beta_vae", 2, 1, args=None)
    assert scores["provenance"] == {"commit": "second"}
    record = disentanglement.cell_record("beta_vae", 2, 1, scores)
    assert (record["seed"], record["metric_seed"]) == (1, 0)
