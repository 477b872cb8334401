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


# The JSON files behind each section of experiments/README.md (its comparison columns included).
SECTION_FILES = {
    "Likelihood on binarized Fashion-MNIST": ["likelihood_fashion_mnist"],
    "Conditional generation by label": ["conditional_generation"],
    "Translation and style swap": [
        "translation",
        *(f"select_epochs_{e}_translation_validation" for e in (25, 50, 100)),
        "translation_validation",
    ],
    "Full size": ["fashion_conditional_generation", "fashion_translation", "conditional_generation", "translation"],
    "Anomaly detection: irregular heartbeats": ["anomaly_ecg"],
    "Anomaly detection: digits": ["anomaly_digits"],
    "Posterior collapse": ["posterior_collapse"],
    "Molecules at the MOSES standard": [
        "molecules_smiles",
        "molecules_kekule",
        "molecules_kekule_grammar",
        "molecules_kekule_grammar_guided",
        "molecules_selfies",
        "molecules_smiles_beta0.05",
    ],
    "Colour images": ["colour_resnet"],
}
# Published figures set beside a section's own (not results of its scripts), by section.
PUBLISHED = {
    "Likelihood on binarized Fashion-MNIST": {"86.76", "85.54", "84.78", "88.56", "85.57"},  # MNIST papers
    "Molecules at the MOSES standard": {  # MOSES's baseline VAE (MOSES README)
        *("0.953", "1.000", "0.999", "0.855", "0.993", "0.468", "0.455", "0.998", "0.996", "0.828", "0.093"),
        *("0.254", "0.696"),
    },
}
# Table numbers with decimals that are not results of the section's scripts, and where they come from.
NOT_IN_JSON = {
    "1.58": "the size of MOSES's training set (1.58M)",
}


def _numbers(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _numbers(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _numbers(value)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield abs(float(tree))


NUMBER = r"(?<![\w.])[−-]?\d[\d,]*\.(\d+)"  # a number with decimals, e.g. 0.936, −105.50, 1,234.5


def _unmatched(rows: list[str], values: list[float], where: str, exempt=frozenset()) -> tuple[int, list[str]]:
    """(numbers checked, those of `rows` that no value rounds to, as shown or as a percentage)."""
    import re

    checked, missing = 0, []
    for row in rows:
        for match in re.finditer(NUMBER, row):
            text, decimals = match.group(0).replace("−", "").replace("-", "").replace(",", ""), len(match.group(1))
            shown, tolerance = float(text), 0.51 * 10**-decimals
            checked += 1
            if text in NOT_IN_JSON or text in exempt:
                continue
            if not any(abs(round(v * d_v, decimals) - shown) < tolerance for v in values for d_v in (1, 100)):
                missing.append(f"{where}: {match.group(0)} in {row[:80]}")
    return checked, missing


def test_every_number_in_the_experiments_tables_is_in_their_json():
    """Each number with decimals in a table of experiments/README.md (and of docs/priors.md) is a
    value of its section's JSON (rounded as shown, or as a percentage), so a table cannot drift from
    the results it reports. Integers (counts, settings) are not checked."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments"

    def table_rows(text: str) -> list[str]:
        rows = [line for line in text.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]
        return rows[1:]  # the header row names columns

    def values(*names: str) -> list[float]:
        return [v for name in names for v in _numbers(json.loads((root / "results" / f"{name}.json").read_text()))]

    checked, missing = _unmatched(
        [line for line in (root.parent / "docs" / "priors.md").read_text().splitlines() if line.startswith("|")],
        values("priors"),
        "docs/priors.md",
    )
    for section in re.split(r"^## ", (root / "README.md").read_text(), flags=re.M)[1:]:
        title = section.splitlines()[0]
        names = next((files for prefix, files in SECTION_FILES.items() if title.startswith(prefix)), None)
        if names is not None:
            exempt = next((nums for prefix, nums in PUBLISHED.items() if title.startswith(prefix)), frozenset())
            count, lost = _unmatched(table_rows(section), values(*names), title[:30], exempt)
            checked, missing = checked + count, missing + lost
    assert checked > 270, checked  # the tables were found
    assert not missing, "\n".join(missing)
