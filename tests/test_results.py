"""benchmarks/RESULTS.md and the README's speed table are generated from the records in
benchmarks/results/, and merging a new measurement replaces the record of the same cell."""

from __future__ import annotations

import json
import tempfile

import pytest

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
    scratch = f"{tempfile.gettempdir()}/scratch/new.jsonl"  # measured into a scratch file, then merged
    stamped = {**_cell("cvae_jax", 300.0), "provenance": {"commit": "c", "command": f"m --out {scratch}", "host": "h"}}
    new.write_text(json.dumps(stamped) + "\n" + json.dumps({"kind": "error", "arg": "x"}) + "\n")
    report.merge(new, "cpu_x", results)
    records = [json.loads(line) for line in (results / "cpu_x.jsonl").read_text().splitlines()]
    assert sorted(r["samples_per_s"] for r in records) == [50.0, 300.0]  # replaced, the other kept, no error line
    assert [r["provenance"]["command"] for r in records if "provenance" in r] == ["m --out <tmp>/scratch/new.jsonl"]
    table = report.kernels_table(results)
    assert table.splitlines()[0] == "| model | cpu_x, flax | cpu_x, tuned |"
    assert table.splitlines()[2] == "| mlp-vae | 300 | 50 |"
    assert "## cpu_x" in report.render(results)
    text = f"intro\n{report.README_BEGIN}\nold\n{report.README_END}\nrest\n"
    assert report.readme_with_table(text, "NEW") == f"intro\n{report.README_BEGIN}\nNEW\n{report.README_END}\nrest\n"


def test_merge_refuses_new_records_inside_the_results_folder(tmp_path):
    """A file there would be rendered as a device class of its own; nothing is written."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "cpu_x.jsonl").write_text(json.dumps(_cell("cvae_jax", 100.0)) + "\n")
    (results / "new.jsonl").write_text(json.dumps(_cell("cvae_jax", 300.0)) + "\n")
    before = {p.name: p.read_text() for p in results.iterdir()}
    with pytest.raises(SystemExit, match=r"inside results/.*scratch file"):
        report.merge(results / "new.jsonl", "cpu_x", results)
    assert {p.name: p.read_text() for p in results.iterdir()} == before


def test_the_machine_line_names_every_host_a_class_file_holds():
    peak = {"kind": "matmul_peak", "device_kind": "cpu", "cpu_model": "EPYC", "cpu_isa": "avx512f"}
    one = {"cpu_model": "EPYC", "cpu_isa": "avx512f", "cpu_family_model": "25/17", "jax": "0.1"}
    other = {**one, "cpu_family_model": "26/2"}
    line = report.machine_line([{**peak, "cpu_family_model": "26/2"}, _cell("cvae_jax", 1.0) | one] * 2)
    assert line == "device cpu, host CPU EPYC (avx512f, family/model 25/17), jax 0.1"  # the records', not the peak's
    line = report.machine_line([peak] + [_cell("cvae_jax", 1.0) | one] * 3 + [_cell("cvae_jax", 1.0) | other])
    assert "EPYC (avx512f, family/model 25/17): 3 records; EPYC (avx512f, family/model 26/2): 1 record" in line


def test_experiment_tables_are_what_the_results_give():
    """Every table of experiments/README.md and docs/priors.md between report markers is exactly what
    python -m experiments.report renders from experiments/results and experiments/published.json."""
    from experiments import report

    assert report.main(["--check"]) == 0
    documents = {path: path.read_text() for path in {document for document, _, _ in report.TABLES}}
    for document, name, _ in report.TABLES:
        assert report.begin(name) in documents[document] and report.end(name) in documents[document], name


def test_any_changed_digit_in_a_generated_table_fails_the_check():
    """Mutating a digit anywhere inside a generated table (one at a time, 400 drawn at random over all
    of them) is caught by the check, naming the file and line."""
    import random

    from experiments import report

    documents = {path: path.read_text() for path in {document for document, _, _ in report.TABLES}}
    wanted = report.render(documents)
    assert report.differences(documents, wanted) == []
    places = []
    for document, name, _ in report.TABLES:
        text = documents[document]
        start, stop = text.index(report.begin(name)) + len(report.begin(name)), text.index(report.end(name))
        places += [(document, i) for i in range(start, stop) if text[i].isdigit()]
    assert len(places) > 2000  # the tables hold thousands of digits
    for document, i in random.Random(0).sample(places, 400):
        text = documents[document]
        mutated = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :]
        found = report.differences({**documents, document: mutated}, wanted)
        line = text[:i].count("\n") + 1
        assert any(f":{line}:" in f for f in found), (document, line)


def test_provenance_names_the_commit_command_and_host_without_this_machines_paths():
    import os
    import re
    import sys

    from cvae_jax import provenance

    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", provenance.commit())
    here, prefix = os.getcwd(), sys.prefix
    assert provenance.portable(f"{here}/runs/x {prefix}/lib/a.py") == "./runs/x <prefix>/lib/a.py"
    assert provenance.portable(f"{tempfile.gettempdir()}/s/new.jsonl") == "<tmp>/s/new.jsonl"
    command = provenance.command(["experiments/likelihood.py", "--data", f"{here}/data"])
    assert command == "python experiments/likelihood.py --data ./data"
    stamp = provenance.stamp()
    assert set(stamp) == {"commit", "command", "host"} and f"{os.cpu_count()} cores" in stamp["host"]


def test_provenance_is_dirty_when_code_differs_not_when_a_result_was_rewritten(tmp_path):
    import subprocess

    from cvae_jax import provenance

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "experiments" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "experiments" / "results" / "a.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    head = provenance.commit(tmp_path)
    assert len(head) == 40
    (tmp_path / "experiments" / "results" / "a.json").write_text('{"rewritten": true}\n')
    (tmp_path / "new_untracked.py").write_text("")
    assert provenance.commit(tmp_path) == head  # an output rewritten, a file not tracked: the code is HEAD's
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.commit(tmp_path) == head + "+dirty"


def test_a_class_file_of_image_records_alone_renders_its_section(tmp_path):
    """A host measured only with benchmarks.image_models (no training-throughput records) gets its
    section: the machine line and the image table, with the ratio of the cells of one run."""
    results = tmp_path / "results"
    results.mkdir()
    run = {"commit": "abcdef1234567", "command": "python -m benchmarks.image_models --model sprites", "host": "h"}
    cell = {"kind": "image_train", "model": "sprites", "size": 64, "batch": 64, "dtype": "float32", "remat": False}
    cell |= {"microbatches": 1, "warmup_s": 1.0, "device_kind": "cpu", "cpu_model": "Xeon", "cpu_isa": "avx512f"}
    (results / "cpu_y.jsonl").write_text(
        json.dumps(cell | {"impl": "cvae_jax", "samples_per_s": 300.0, "provenance": run})
        + "\n"
        + json.dumps(
            cell | {"impl": "torch", "samples_per_s": 200.0, "provenance": run, "torch_layout": "channels_last"}
        )
        + "\n"
    )
    text = report.render(results)
    section = text[text.index("## cpu_y") :]
    assert section.splitlines()[2].startswith("device cpu, host CPU Xeon")
    assert "Matmul peak: not measured" in section
    assert "before the stamps" not in section  # every row names its run: no caveat about unstamped rows
    row = next(line for line in section.splitlines() if "| torch |" in line)
    assert "| 200 |" in row and "1.50x" in row  # 300 / 200, measured side by side
    assert "| model | cpu_y" not in report.kernels_table(results)  # no training cells, no speed column
