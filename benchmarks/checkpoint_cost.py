"""What checkpointing costs: save time, restore time, and training throughput with async saves,
sync saves and no periodic saves, for the default CVAE on the embedded digits.

    python -m benchmarks.checkpoint_cost [--epochs 30] [--rounds 3]

Each training run is a fresh process (`python -m benchmarks.checkpoint_cost --one MODE WORKDIR`),
rounds rotate the order; the table gives medians over rounds of the per-run median epoch time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {
    "async, every epoch": ["checkpoint.every_epochs=1", "checkpoint.async_save=true"],
    "sync, every epoch": ["checkpoint.every_epochs=1", "checkpoint.async_save=false"],
    "only at the end": ["checkpoint.every_epochs=0"],
}


def one(mode: str, workdir: str, epochs: int) -> dict:
    from cvae_jax.config import apply_overrides, get_config
    from cvae_jax.tasks.images import load_run, train_and_evaluate

    cfg = apply_overrides(get_config("cvae"), [f"train.epochs={epochs}", *MODES[mode]])
    start = time.perf_counter()
    run = train_and_evaluate(cfg, workdir, progress=False)
    wall = time.perf_counter() - start
    train = [e for e in run.history if e["split"] == "train"][1:]  # epoch 1 includes compilation
    saves = [e["save_s"] for e in run.history if e["split"] == "checkpoint"]
    t = time.perf_counter()
    load_run(workdir)
    restore_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in (Path(workdir) / "checkpoints").rglob("*") if p.is_file())
    return {
        "mode": mode,
        "epoch_s": statistics.median(e["seconds"] for e in train),
        "wall_s": wall,
        "save_s": statistics.median(saves),
        "saves": len(saves),
        "restore_s": restore_s,
        "checkpoint_bytes_kept": size,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", nargs=2, metavar=("MODE", "WORKDIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        from benchmarks.jax_cell import no_compile_cache

        no_compile_cache()  # each mode's wall time includes its compilation, never a cached one
        print(json.dumps(one(args.one[0], args.one[1], args.epochs)))
        return 0
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    modes = list(MODES)
    for r in range(args.rounds):
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.checkpoint_cost",
                        "--epochs",
                        str(args.epochs),
                        "--one",
                        mode,
                        str(Path(tmp) / "run"),
                    ],
                    capture_output=True,
                    text=True,
                )
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            results[mode].append(result)
    print("\n| checkpointing | epoch s (median) | saves | blocking s per save | restore s | wall s |")
    print("|---|---|---|---|---|---|")
    for mode, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("epoch_s", "save_s", "restore_s", "wall_s")}
        print(
            f"| {mode} | {med['epoch_s']:.3f} | {rs[0]['saves']} | {med['save_s']:.3f} | "
            f"{med['restore_s']:.2f} | {med['wall_s']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
