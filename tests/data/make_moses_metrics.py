"""Writes moses_metrics.json: MOSES's own metric values (molsets 0.3.1's `moses.metrics`) on the
fixtures of this folder, for tests/test_molecule_metrics.py to match. Run from the repository root in
an environment with molsets 0.3.1 (`pip install --no-deps molsets pandas seaborn`), fcd_torch and torch:

    python tests/data/make_moses_metrics.py

molsets 0.3.1 was written for older RDKit and pandas: it imports `rdkit.six` (gone from RDKit) and
calls `DataFrame.append` (gone from pandas 2). The shims below restore those two names with their old
meaning; nothing of MOSES's metric code is changed.
"""

import gzip
import json
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
six = types.ModuleType("rdkit.six")
six.iteritems = lambda d: iter(d.items())
sys.modules["rdkit.six"] = six
import pandas as pd  # noqa: E402

if not hasattr(pd.DataFrame, "append"):
    pd.DataFrame.append = lambda self, other, sort=False: pd.concat([self, other], sort=sort)

import moses  # noqa: E402
from moses.metrics import metrics as mm  # noqa: E402


def rows(name: str) -> list[str]:
    with gzip.open(HERE / name, "rt") as f:
        return f.read().splitlines()[1:]


def main() -> None:
    train, test = rows("moses_train_1200.csv.gz"), rows("moses_test_400.csv.gz")
    # "Generated": 300 real molecules, 100 of them repeated, and strings that do not parse.
    generated = train[:300] + train[:100] + ["C1CC", "not a molecule", "c1ccccc", ""]
    sets = {"generated": generated, "train": train[200:], "Test": test[:200], "TestSF": test[200:]}
    scores = mm.get_all_metrics(
        gen=generated,
        k=[100, 400],
        n_jobs=1,
        device="cpu",
        batch_size=128,
        test=sets["Test"],
        test_scaffolds=sets["TestSF"],
        train=sets["train"],
    )
    out = {
        "provenance": (
            "molsets 0.3.1 moses.metrics.get_all_metrics(k=[100, 400], n_jobs=1, device='cpu') on the fixtures "
            "of tests/data (made by tests/data/make_moses_metrics.py, with rdkit.six shimmed)"
        ),
        "moses_version": getattr(moses, "__version__", "0.3.1"),
        "sets": {
            "generated": "moses_train_1200 rows 0-299, then rows 0-99 again, then 'C1CC', 'not a molecule', "
            "'c1ccccc', ''",
            "train": "moses_train_1200 rows 200-1199",
            "Test": "moses_test_400 rows 0-199",
            "TestSF": "moses_test_400 rows 200-399",
        },
        "metrics": {k: float(v) for k, v in scores.items()},
    }
    (HERE / "moses_metrics.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["metrics"], indent=2))


if __name__ == "__main__":
    main()
