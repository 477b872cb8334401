"""benchmarks/RESULTS.md and the README's speed table are generated from the records in
benchmarks/results/, and merging a new measurement replaces the record of the same cell."""

from __future__ import annotations

import json

from benchmarks import report


def test_results_and_the_readme_table_are_what_the_records_give():
    assert report.main(["--check"]) == 0
    assert len(report.render().splitlines()) < 300


def _cell(impl: str, samples_per_s: float, mode: str = "fused (model.kernels=flax)") -> dict:
    return {
        "kind": "train",
        "impl": impl,
        "model": "mlp-vae",
        "batch": 128,
        "mode": mode,
        "devices": 1,
        "samples_per_s": samples_per_s,
        "compile_s": 1.0,
        "peak_host_bytes": 2**20,
        "data": "random",
    }


def test_merge_replaces_the_same_cell_and_the_table_shows_it(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "cpu_x.jsonl").write_text(
        json.dumps(_cell("cvae_jax", 100.0))
        + "\n"
        + json.dumps(_cell("cvae_jax", 50.0, "fused (model.kernels=tuned)"))
        + "\n"
    )
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps(_cell("cvae_jax", 300.0)) + "\n" + json.dumps({"kind": "error", "arg": "x"}) + "\n")
    report.merge(new, "cpu_x", results)
    records = [json.loads(line) for line in (results / "cpu_x.jsonl").read_text().splitlines()]
    assert sorted(r["samples_per_s"] for r in records) == [50.0, 300.0]  # replaced, the other kept, no error line
    table = report.kernels_table(results)
    assert table.splitlines()[0] == "| model | cpu_x, flax | cpu_x, tuned |"
    assert table.splitlines()[2] == "| mlp-vae | 300 | 50 |"
    assert "## cpu_x" in report.render(results)
    text = f"intro\n{report.README_BEGIN}\nold\n{report.README_END}\nrest\n"
    assert report.readme_with_table(text, "NEW") == f"intro\n{report.README_BEGIN}\nNEW\n{report.README_END}\nrest\n"
