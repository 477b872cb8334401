"""experiments/_shared.py's seeds: the spread the headline tables report is the statistics of each
seed's own numbers, and a seed's run folder is where the README says."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import _shared  # noqa: E402


def test_spread_is_mean_std_min_max_of_every_number_over_the_runs():
    runs = [
        {"acc": 0.9, "rows": [{"auc": 0.5, "name": "a"}, {"auc": 0.7, "name": "b"}], "units": 16, "flag": True},
        {"acc": 0.8, "rows": [{"auc": 0.6, "name": "a"}, {"auc": 0.9, "name": "b"}], "units": 12, "flag": True},
        {"acc": 1.0, "rows": [{"auc": 0.4, "name": "a"}, {"auc": 0.8, "name": "b"}], "units": 14, "flag": True},
    ]
    merged = _shared.spread(runs)
    assert merged["acc"]["mean"] == pytest.approx(0.9)
    assert merged["acc"]["std"] == pytest.approx(np.std([0.9, 0.8, 1.0], ddof=1))
    assert (merged["units"]["min"], merged["units"]["max"]) == (12, 16)
    assert merged["rows"][1]["auc"]["mean"] == pytest.approx(statistics.mean([0.7, 0.9, 0.8]))
    assert merged["rows"][0]["name"] == "a" and merged["flag"] is True


def test_spread_drops_what_differs_and_gives_zero_std_for_one_run():
    merged = _shared.spread([{"x": 1.0, "path": "runs/a", "list": [1, 2]}, {"x": 3.0, "path": "runs/b", "list": [1]}])
    assert set(merged) == {"x"} and merged["x"]["std"] == pytest.approx(np.sqrt(2.0))
    assert _shared.spread([{"x": 2.5}])["x"] == {"mean": 2.5, "std": 0.0, "min": 2.5, "max": 2.5}


def test_seed_zero_keeps_the_readme_folder_and_the_others_get_their_own():
    assert _shared.seed_workdir("runs/quickstart", 0) == "runs/quickstart"
    assert _shared.seed_workdir(Path("runs") / "x", 2) == str(Path("runs") / "x") + "_seed2"


def test_seed_arguments_default_to_three_seeds_and_seed_picks_one():
    import argparse

    parser = argparse.ArgumentParser()
    _shared.add_seed_arguments(parser)
    assert _shared.seeds_of(parser.parse_args([])) == [0, 1, 2]
    assert _shared.seeds_of(parser.parse_args(["--seed", "4"])) == [4]
    assert _shared.seeds_of(parser.parse_args(["--seeds", "3", "3", "5"])) == [3, 5]


def test_one_seed_results_merge_into_the_file_one_run_would_write(tmp_path, monkeypatch):
    """Seeds run in parallel processes (--seed S --name NAME_seed<S>) merge into NAME.json: each seed's
    numbers, their spread as one run computes it, the first seed's sample file; other settings refuse."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import _shared

    monkeypatch.setattr(_shared, "RESULTS", tmp_path)
    for seed, value in ((0, 1.0), (1, 3.0), (2, 8.0)):
        one = {"settings": {"epochs": 2}, "seeds": [seed], "by_seed": {str(seed): {"valid": value}}}
        (tmp_path / f"m_seed{seed}.json").write_text(json.dumps({**one, "provenance": {"commit": str(seed)}}))
    (tmp_path / "m_seed0_samples.smi").write_text("CCO\n")
    merged = _shared.merge_seeds("m", [0, 1, 2])
    assert merged["by_seed"] == {"0": {"valid": 1.0}, "1": {"valid": 3.0}, "2": {"valid": 8.0}}
    assert merged["spread"] == _shared.spread([{"valid": 1.0}, {"valid": 3.0}, {"valid": 8.0}])
    assert merged["spread"]["valid"]["mean"] == 4.0 and merged["parts"]["2"] == {"commit": "2"}
    assert json.loads((tmp_path / "m.json").read_text())["seeds"] == [0, 1, 2]
    assert (tmp_path / "m_samples.smi").read_text() == "CCO\n"
    (tmp_path / "m_seed2.json").write_text(json.dumps({"settings": {"epochs": 3}, "seeds": [2], "by_seed": {"2": {}}}))
    with pytest.raises(SystemExit, match="other settings"):
        _shared.merge_seeds("m", [0, 1, 2])
