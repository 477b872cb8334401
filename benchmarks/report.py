"""benchmarks/RESULTS.md, generated from the current records: one file of JSON lines per device class
in benchmarks/results/ (`<class>.jsonl`, lines written by `python -m benchmarks.throughput --out`).

    python -m benchmarks.report            # rewrite benchmarks/RESULTS.md and the README's speed table
    python -m benchmarks.report --check    # exit 1 if either is not what the records give

A new measurement goes into its class's file in place of the record of the same cell (the history is
in git); `--merge NEW.jsonl CLASS` does that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from benchmarks import image_models
from benchmarks.throughput import _key, load_results, summarize, table
from cvae_jax import provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

HOW = """\
## How it is measured

* Every cell (implementation × model × batch × mode × devices) runs in its own fresh process, one at
  a time; cells are interleaved round by round, and a table shows the median over rounds (`spread` =
  (max − min) / median). Throughput is samples/s over whole epochs (the median of the timed epochs),
  compilation excluded and reported apart (`compile s`).
* cvae_jax modes: `step` = a jitted step per batch fed from host arrays; `device` = data on the
  device, one compiled step per call; `fused` = a whole epoch in one compiled `lax.scan`. A mode in
  parentheses names a config override (e.g. `model.kernels=flax`).
* References (`pip install -e ".[compare]"`): Keras 3 (`keras`, `keras_xla` = `jit_compile=True`) and
  PyTorch (`torch`, `torch_compile` = the model's forward compiled), written the way their users write
  them. `cvae_jax / this` is the best cvae_jax mode's samples/s over the reference's, same run, **of
  the same arithmetic** only (the `arithmetic` column): bf16 against PyTorch's bf16 autocast, float32
  against float32 with the same matmul precision. On a CPU float32 is always full precision. On these
  GPUs JAX's default runs float32 matmuls and convolutions as TF32, while PyTorch's default keeps float32
  matmuls full (and runs convolutions as TF32): a TF32 cvae_jax cell is not compared with a full-float32
  PyTorch cell, so those rows have no ratio until one side is measured in the other's precision
  (`JAX_DEFAULT_MATMUL_PRECISION=highest`, or TF32 on in PyTorch). Records that predate the
  `matmul_precision` field are read with each library's default (`benchmarks.common.precision`).
* `peak frac.`: training FLOPs (3 × the forward's matmuls and convolutions, counted from the jaxpr)
  per second over the measured matmul peak of the cell's compute dtype.
* Data is random and MNIST-shaped unless the model names a data set. Models
  (`benchmarks/models.py`): article VAE 784-256-2; article CVAE (conv 32, dense 64, latent 2); MLP
  VAE 784-512-512-32; conv VAE (conv 32-64, dense 256, latent 16); `cvae` the default CVAE.
* Absolute numbers compare only within one device class (one file); CPU instances of the same class
  name differ. Reproduce a cell with the `benchmarks.throughput` command in its section.
"""


def commands_line(records: list[dict]) -> str:
    """The commands and commits the records say they came from; records made before the provenance
    stamp say nothing, and the line says how many those are."""
    stamped = [r["provenance"] for r in records if r.get("provenance")]
    runs = sorted({(p["command"], p["commit"][:12]) for p in stamped})
    said = "; ".join(f"`{command}` (commit {commit})" for command, commit in runs)
    unstamped = len(records) - len(stamped)
    old = (
        f"{unstamped} of the {len(records)} records predate the provenance stamp and name no command"
        if unstamped
        else ""
    )
    return " ".join(part for part in (f"Commands: {said}." if said else "", f"{old}." if old else "") if part)


def _cpu(r: dict) -> str:
    return f"{r.get('cpu_model', '?')} ({r.get('cpu_isa', '?')}, family/model {r.get('cpu_family_model', '?')})"


def machine_line(records: list[dict]) -> str:
    """The device, and each host CPU the records name with how many records it measured: one class
    file can hold hosts of one ISA but different models (a VM is not always the same machine)."""
    peak = next((r for r in records if r.get("kind") == "matmul_peak"), {})
    if "device_kind" not in peak:  # a file of image or evaluation records alone names it in each
        peak = {**peak, "device_kind": next((r["device_kind"] for r in records if r.get("device_kind")), "?")}
    jax_version = next((r.get("jax") for r in records if r.get("jax")), "?")
    hosts = Counter(
        _cpu(r) for r in records if r.get("kind") != "matmul_peak" and (r.get("cpu_model") or r.get("cpu_family_model"))
    )
    if len(hosts) > 1:
        said = "; ".join(f"{cpu}: {n} record{'s' * (n != 1)}" for cpu, n in hosts.most_common())
        return f"device {peak.get('device_kind', '?')}, host CPUs {said}; jax {jax_version}"
    cpu = next(iter(hosts), None) or _cpu(peak)
    return f"device {peak.get('device_kind', '?')}, host CPU {cpu}, jax {jax_version}"


def evaluation_table(records: list[dict]) -> str:
    """The importance-sampled NLL evaluation (benchmarks.nll_eval): cvae_jax against PyTorch."""
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("kind") == "nll_eval":
            cells.setdefault((r["k"], r["num_examples"], r["impl"]), []).append(r)
    if not cells:
        return ""
    lines = [
        "| impl | K | test images | seconds | rounds | test NLL (nats) | cvae_jax / this |",
        "|---|---|---|---|---|---|---|",
    ]
    seconds = {key: statistics.median(r["seconds"] for r in rs) for key, rs in cells.items()}
    for (k, n, impl), rs in sorted(cells.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] != "cvae_jax")):
        ours = seconds.get((k, n, "cvae_jax"))
        ratio = f"{seconds[(k, n, impl)] / ours:.2f}x" if ours and impl != "cvae_jax" else ""
        nll = statistics.median(r["nll"] for r in rs)
        lines.append(f"| {impl} | {k:,} | {n:,} | {seconds[(k, n, impl)]:.1f} | {len(rs)} | {nll:.2f} | {ratio} |")
    return "\n".join(lines)


def render(results_dir: Path = RESULTS) -> str:
    parts = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/<device class>.jsonl`; do not "
        "edit by hand. Each file holds the current record of every cell measured on that class; the "
        "history is in git.",
        "",
        HOW,
    ]
    for path in sorted(results_dir.glob("*.jsonl")):
        records, peaks = load_results([str(path)], require_train=False)
        name = path.stem
        peak_line = ", ".join(f"{v / 1e9:,.0f} GFLOP/s ({k})" for k, v in sorted(peaks.items())) or "not measured"
        parts += [f"## {name}", "", f"{machine_line(records)}. Matmul peak: {peak_line}. {commands_line(records)}", ""]
        if any(r.get("kind") == "train" for r in records):
            parts += [table(summarize(records, peaks)), ""]
        images = image_models.table(image_models.summarize(records, peaks))
        if any(r.get("kind") == "image_train" for r in records):
            unstamped = any(r.get("kind") == "image_train" and not r.get("provenance") for r in records)
            parts += [
                "Convolutional image models: the ResNet VAE (`--preset resnet`, colour) and the sprites VAE "
                "(`--preset sprites`: Locatello et al.'s 4-layer conv VAE on 64 x 64 binary images) against "
                "the same model in PyTorch, eager (channels-last unless the impl says contiguous) and with "
                "the whole step torch.compile'd, and the hierarchical VAE (`python -m benchmarks.image_models`, "
                "see its docstring; the GPU run is `gpu_run.sh images`). A ratio compares cells of one run "
                "(its commit, in the run column): measured side by side on one host. The peak fraction is "
                "against this file's matmul peak"
                + (
                    "; the rows of the run before the stamps came from another host of this ISA, so their "
                    "fractions overstate"
                    if unstamped
                    else ""
                )
                + ". `chunks`: the step's batch split into that "
                "many chunks with gradients accumulated (`--microbatches`; cvae_jax's `train.microbatches`, "
                "PyTorch's backward per chunk), the same update; a ratio compares equal chunkings:",
                "",
                images,
                "",
            ]
            best = image_models.best_of_each(image_models.summarize(records, peaks))
            if best:
                parts += [
                    "Each framework at its fastest chunking (the update is the same at every chunking, so "
                    "this is each one's strongest):",
                    "",
                    *best,
                    "",
                ]
        evaluation = evaluation_table(records)
        if evaluation:
            parts += [
                "Evaluation: the importance-sampled test NLL of an MLP VAE 784-512-512-32 on Fashion-MNIST, "
                "the same weights and saved binarized test images for both "
                "(`python -m benchmarks.nll_eval --workdir RUN --num-examples 10000`):",
                "",
                evaluation,
                "",
            ]
    return "\n".join(parts)


README = HERE.parent / "README.md"
README_BEGIN = "<!-- speed table: generated by python -m benchmarks.report from benchmarks/results -->"
README_END = "<!-- end of speed table -->"
KERNELS = ("flax", "tuned")


def kernels_table(results_dir: Path = RESULTS, batch: int = 128) -> str:
    """The README's table: samples/s of fused epochs at `batch` per model, for model.kernels=flax and
    =tuned, in every device class that measured both."""
    columns, cells = [], {}
    for path in sorted(results_dir.glob("*.jsonl")):
        records, peaks = load_results([str(path)], require_train=False)
        rows = [r for r in summarize(records, peaks) if r["batch"] == batch and r["impl"] == "cvae_jax"]
        for kernels in KERNELS:
            found = {r["model"]: r["samples_per_s"] for r in rows if r["mode"] == f"fused (model.kernels={kernels})"}
            if found:
                columns.append((path.stem, kernels))
                for model, value in found.items():
                    cells[(model, path.stem, kernels)] = value
    models = sorted({model for model, *_ in cells})
    head = "| model | " + " | ".join(f"{name}, {kernels}" for name, kernels in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for model in models:
        values = [cells.get((model, name, kernels)) for name, kernels in columns]
        lines.append(f"| {model} | " + " | ".join(f"{v:,.0f}" if v else "" for v in values) + " |")
    return "\n".join(lines)


def readme_with_table(text: str, table_text: str) -> str:
    """`text` (the README) with the block between the speed-table markers replaced by `table_text`."""
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"README.md lacks the markers {README_BEGIN!r} ... {README_END!r}")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{table_text}\n{README_END}{tail}"


def merge(new: Path, device_class: str, results_dir: Path = RESULTS) -> None:
    """Adds the records of `new` to `<device_class>.jsonl`, replacing those of the same cells. Run it on
    the machine that measured them: their commands' paths are made portable (`provenance.portable`)."""

    def key(r: dict) -> tuple:
        """A cell's identity: the table's (throughput._key), with the kind and an evaluation's K and size."""
        if r.get("kind") == "matmul_peak":
            return ("peak", r.get("dtype", "float32"))
        extra = tuple(r.get(name) for name in ("k", "num_examples", "size", "dtype", "remat"))
        return (r.get("kind"), *_key(r), *extra)

    if new.resolve().parent == results_dir.resolve():
        raise SystemExit(
            f"{new} is inside {results_dir.name}/, where every file is a device class that RESULTS.md "
            "shows as its own section; measure into a scratch file (say --out /tmp/new.jsonl) and merge that"
        )
    target = results_dir / f"{device_class}.jsonl"
    old = [json.loads(line) for line in target.read_text().splitlines() if line.strip()] if target.exists() else []
    fresh = [json.loads(line) for line in new.read_text().splitlines() if line.strip().startswith("{")]
    fresh = [r for r in fresh if r.get("kind") != "error"]
    for r in fresh:  # a record measured into a scratch file names it, as it names every path, portably
        if r.get("provenance"):
            r["provenance"]["command"] = provenance.portable(r["provenance"]["command"])
    replaced = {key(r) for r in fresh}
    kept = [r for r in old if key(r) not in replaced]
    target.write_text("".join(json.dumps(r) + "\n" for r in kept + fresh))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if RESULTS.md differs from the records")
    p.add_argument("--merge", nargs=2, metavar=("NEW.jsonl", "CLASS"), help="merge new records into a class file")
    args = p.parse_args(argv)
    if args.merge:
        merge(Path(args.merge[0]), args.merge[1])
    outputs = {HERE / "RESULTS.md": render(), README: readme_with_table(README.read_text(), kernels_table())}
    if args.check:
        stale = [str(path.name) for path, text in outputs.items() if not path.exists() or path.read_text() != text]
        if stale:
            print(f"{', '.join(stale)}: not what the records give; run python -m benchmarks.report", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path} ({text.count(chr(10))} lines)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
