"""Training throughput of cvae_jax (and, with --compare, of Keras and PyTorch references).

    python -m benchmarks.throughput --quick
    python -m benchmarks.throughput --model article-vae,article-cvae --batch-size 32,128 --mode step,fused
    python -m benchmarks.throughput --model mlp-vae --devices 1,2,4,8 --json   # virtual CPU devices
    python -m benchmarks.throughput --model article-vae --compare keras,torch  # needs pip install .[compare]
    python -m benchmarks.throughput --model mlp-vae --variant "" --variant "train.objective=beta_tcvae"
    python -m benchmarks.throughput --table benchmarks/results/cpu_full_cvae.jsonl  # re-render saved lines

Every cell (implementation x model x batch x mode x devices) runs in its own fresh process, one at a
time; cells are interleaved round by round so that a noisy machine hurts all alike, and the table
reports medians over rounds. On CPU, `--devices N` splits the host into N XLA devices
(--xla_force_host_platform_device_count), which share the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.models import MODELS

MODES = ("step", "device", "fused")
REFERENCES = ("keras", "keras_xla", "torch", "torch_compile")


def _device_env(devices: int) -> dict[str, str]:
    flags = os.environ.get("XLA_FLAGS", "")
    if devices > 1 and os.environ.get("JAX_PLATFORMS", "cpu") in ("cpu", ""):
        flags = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return {"XLA_FLAGS": flags} if flags else {}


MIN_STEPS = 10


def short_epochs(samples: int, batch_sizes: list[int]) -> list[str]:
    """Warnings for batch sizes (global, whatever the device count) whose epochs hold fewer than
    MIN_STEPS steps: the timed unit is an epoch, and an epoch of a few steps is dominated by
    per-epoch overhead and timer noise."""
    return [
        f"--samples {samples} gives {samples // b} steps per epoch at batch {b}: timings over so few "
        f"steps are noisy; use --samples >= {MIN_STEPS * b}"
        for b in batch_sizes
        if samples // b < MIN_STEPS
    ]


def variant_overrides(variant: str) -> list[str]:
    """A --variant's config overrides: its ';'-separated items, blanks dropped ('' is none)."""
    return [item.strip() for item in variant.split(";") if item.strip()]


def plan(args) -> list[dict[str, Any]]:
    cells = []
    for model in args.model:
        for batch in args.batch_size:
            for devices in args.devices:
                for mode in args.mode:
                    for variant in args.variant or [""]:
                        cells.append(
                            {
                                "impl": "cvae_jax",
                                "model": model,
                                "batch": batch,
                                "mode": mode,
                                "devices": devices,
                                "samples": args.samples,
                                "repeats": args.repeats,
                                "set": args.set + variant_overrides(variant),
                                "data": args.data,
                            }
                        )
            for ref in args.compare:
                cells.append(
                    {
                        "impl": ref,
                        "model": model,
                        "batch": batch,
                        "samples": args.samples,
                        "repeats": args.repeats,
                        "data": args.data,
                    }
                )
    return cells


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    arg = json.dumps(cell)
    if cell["impl"] == "cvae_jax":
        return common.run_cell("benchmarks.jax_cell", [arg], _device_env(cell["devices"]))
    module = "benchmarks.reference_keras" if cell["impl"].startswith("keras") else "benchmarks.reference_torch"
    return common.run_cell(module, [arg])


def _key(r: dict[str, Any]) -> tuple:
    """(model, batch, impl, mode, devices, arithmetic); the model named with its data where that is not
    random, and with its --set overrides. The arithmetic (common.precision) keeps, say, a TF32 and a
    full-float32 run of one mode apart."""
    data = r.get("data") or "random"
    model = r.get("model") if data == "random" else f"{r.get('model')} ({Path(data).name})"
    if r.get("set"):  # config overrides (an objective, a posterior) make another row of the same model
        model = f"{model} [{', '.join(r['set'])}]"
    return (model, r.get("batch"), r.get("impl"), r.get("mode", ""), r.get("devices", 1), common.precision(r))


def summarize(results: list[dict[str, Any]], peaks: dict[str, float]) -> list[dict[str, Any]]:
    """Median over rounds per configuration, with the FLOP fraction and the ratio to each reference.

    peaks: matmul FLOP/s by input dtype; a cvae_jax cell's fraction is of the peak of its compute
    dtype (model.compute_dtype), and no fraction is given where that peak was not measured."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        if r.get("kind") == "train":
            groups.setdefault(_key(r), []).append(r)
    rows = []
    for key, rs in groups.items():
        speeds = [r["samples_per_s"] for r in rs]
        med = statistics.median(speeds)
        row = {
            "model": key[0],
            "batch": key[1],
            "impl": key[2],
            "mode": key[3],
            "devices": key[4],
            "samples_per_s": med,
            "rounds": len(rs),
            "spread": (max(speeds) - min(speeds)) / med,
            "compile_s": statistics.median(r["compile_s"] for r in rs),
            "precision": common.precision(rs[0]),
        }
        peak = peaks.get(rs[0].get("compute_dtype", "float32"))
        if peak and rs[0].get("train_flops_per_sample"):
            physical = 1 if rs[0].get("platform") == "cpu" else key[4]  # virtual CPU devices share the cores
            row["peak_fraction"] = med * rs[0]["train_flops_per_sample"] / (peak * physical)
        row["peak_host_mib"] = max(r.get("peak_host_bytes") or 0 for r in rs) / 2**20
        if any(r.get("peak_device_bytes") for r in rs):
            row["peak_device_mib"] = max(r.get("peak_device_bytes") or 0 for r in rs) / 2**20
        rows.append(row)
    # The ratio: the best cvae_jax mode of the same model, batch and arithmetic (common.precision) over
    # the reference; none where cvae_jax has no cell of the reference's arithmetic.
    best_jax = {}
    for row in rows:
        if row["impl"] == "cvae_jax":
            k = (row["model"], row["batch"], row["precision"])
            best_jax[k] = max(best_jax.get(k, 0.0), row["samples_per_s"])
    for row in rows:
        k = (row["model"], row["batch"], row["precision"])
        if row["impl"] != "cvae_jax" and k in best_jax:
            row["cvae_jax_ratio"] = best_jax[k] / row["samples_per_s"]
    # A cell with config overrides (its mode "fused (key=value ...)", as jax_cell labels --set and
    # --variant) against the same model's cell of the plain mode: same batch, devices and arithmetic.
    plain = {(r["model"], r["batch"], r["impl"], r["mode"], r["devices"], r["precision"]): r for r in rows}
    for row in rows:
        mode, _, overrides = row["mode"].partition(" (")
        if overrides:
            base = plain.get((row["model"], row["batch"], row["impl"], mode, row["devices"], row["precision"]))
            if base:
                row["of_plain"] = row["samples_per_s"] / base["samples_per_s"]
    return sorted(
        rows, key=lambda r: (r["model"], r["batch"], r["impl"] != "cvae_jax", r["impl"], r["mode"], r["devices"])
    )


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | batch | impl | mode | devices | arithmetic | samples/s | spread | compile s | peak frac. | "
        "host MiB | device MiB | cvae_jax / this | × plain |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        frac = f"{r['peak_fraction']:.0%}" if "peak_fraction" in r else ""
        ratio = f"{r['cvae_jax_ratio']:.2f}x" if "cvae_jax_ratio" in r else ""
        device = f"{r['peak_device_mib']:.0f}" if "peak_device_mib" in r else ""  # none on XLA:CPU
        spread = f"{r['spread']:.0%}" if r.get("rounds", 1) > 1 else ""
        of_plain = f"{r['of_plain']:.2f}x" if "of_plain" in r else ""
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['impl']} | {r['mode']} | {r['devices']} | {r['precision']} | "
            f"{r['samples_per_s']:,.0f} | {spread} | {r['compile_s']:.2f} | {frac} | {r['peak_host_mib']:.0f} | "
            f"{device} | {ratio} | {of_plain} |"
        )
    return "\n".join(lines)


def load_results(paths: list[str], require_train: bool = True) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The measurements and the median matmul peak per dtype in files of JSON lines written by
    --out/--json (peaks recorded without a dtype are float32). `require_train`: refuse files without a
    training record (--table's input; a results file of image or evaluation records alone is fine)."""
    results, peaks = [], {}
    for path in paths:
        try:
            with open(path) as f:
                lines = [(n, line) for n, line in enumerate(f, 1) if line.strip().startswith("{")]
        except OSError as e:
            raise SystemExit(f"--table: cannot read {path}: {e.strerror}")
        for n, line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"--table: {path}:{n} is not a JSON object ({e.msg}); pass files written by --out")
            if record.get("kind") == "matmul_peak" and record.get("flops_per_s"):
                peaks.setdefault(record.get("dtype", "float32"), []).append(record["flops_per_s"])
            results.append(record)
    if require_train and not any(r.get("kind") == "train" for r in results):
        raise SystemExit(f"--table: no training measurements in {', '.join(paths)}")
    return results, {dtype: statistics.median(values) for dtype, values in peaks.items()}


def compute_dtypes(overrides: list[str]) -> list[str]:
    """The dtypes whose matmul peak a run needs: float32, and the model.compute_dtype set by --set."""
    dtypes = ["float32"]
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "model.compute_dtype" and value.strip() not in dtypes:
            dtypes.append(value.strip())
    return dtypes


def check_choices(parser: argparse.ArgumentParser, flag: str, values: list[str], choices) -> None:
    """A usage error naming the first of `values` that is not one of `choices`."""
    for value in values:
        if value not in choices:
            parser.error(f"{flag} {value!r}: choose from {', '.join(choices)}")


def _csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=_csv(str), default=["article-vae", "article-cvae", "mlp-vae", "conv-vae"])
    p.add_argument("--batch-size", type=_csv(int), default=[32, 128, 1024, 4096])
    p.add_argument("--mode", type=_csv(str), default=list(MODES))
    p.add_argument("--devices", type=_csv(int), default=[1])
    p.add_argument("--compare", type=_csv(str), default=[], help=f"references: {','.join(REFERENCES)}")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all cells; the table shows medians")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per cell (median)")
    p.add_argument("--samples", type=int, default=60000, help="training examples per epoch (random MNIST-shaped)")
    p.add_argument(
        "--data",
        default="",
        help="a folder of MNIST-format IDX files (e.g. /usr/share/datasets/"
        "fashion-mnist): train on its first --samples images instead of random ones",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the cvae_jax cells, e.g. train.microbatches=8 (repeatable)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE;...",
        help="config overrides (';'-separated) that make a row of their own, interleaved with the other "
        "variants' cells; '' is the model as it is, the × plain column's reference (repeatable)",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: article VAE, batch 128, 1 round (< 1 min)")
    p.add_argument("--json", action="store_true", help="print one JSON object per measurement")
    p.add_argument("--out", help="also append the JSON lines to this file")
    p.add_argument(
        "--table",
        nargs="+",
        metavar="FILE",
        help="measure nothing: print the summary table of JSON lines saved with --out",
    )
    args = p.parse_args(argv)
    if args.table:
        results, peaks = load_results(args.table)
        print(table(summarize(results, peaks)))
        return 0
    if args.quick:
        args.model, args.batch_size, args.mode = ["article-vae"], [128], ["step", "fused"]
        args.rounds, args.repeats, args.samples = 1, 2, 16384
    check_choices(p, "--model", args.model, MODELS)
    check_choices(p, "--mode", args.mode, MODES)
    check_choices(p, "--compare", args.compare, REFERENCES)
    if any(b < 1 for b in args.batch_size) or any(d < 1 for d in args.devices):
        p.error("--batch-size and --devices must be >= 1")

    def emit(result: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(result), flush=True)
        if args.out:
            common.append_record(args.out, result)
        if result.get("kind") == "error":
            print(f"cell failed: {result}", file=sys.stderr)

    for warning in short_epochs(args.samples, args.batch_size):  # before any measuring
        print(f"warning: {warning}", file=sys.stderr)
    peaks, machine = {}, {}
    for dtype in compute_dtypes(args.set + [o for v in args.variant for o in variant_overrides(v)]):
        peak = common.run_cell("benchmarks.jax_cell", [f"matmul:{dtype}"])
        emit(peak)
        if peak.get("flops_per_s"):
            peaks[dtype] = peak["flops_per_s"]
        machine = machine or peak  # every peak cell describes the same device and host
    results = []
    cells = plan(args)
    for round_index in range(args.rounds):
        # Rotate the order each round so no cell always runs first (or right after a heavy one).
        shift = round_index % len(cells)
        for cell in cells[shift:] + cells[:shift]:
            result = run_cell(cell)
            result["round"] = round_index
            results.append(result)
            emit(result)
    rows = summarize(results, peaks)
    for dtype, flops in peaks.items():
        print(f"matmul peak: {flops / 1e9:.0f} GFLOP/s ({dtype})", file=sys.stderr)
    print(
        f"device {machine.get('device_kind', '?')}; host CPU {machine.get('cpu_model', '?')}, "
        f"family/model {machine.get('cpu_family_model', '?')}, {machine.get('cpu_isa', '?')}",
        file=sys.stderr,
    )
    print(table(rows))
    failed = [r for r in results if r.get("kind") == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
