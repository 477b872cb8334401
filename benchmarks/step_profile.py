"""Where a train step's time goes: the whole step and its pieces, each timed inside a compiled scan.

    python -m benchmarks.step_profile --model mlp-vae --batch-size 4096
    python -m benchmarks.step_profile --model article-cvae,conv-vae --batch-size 128 --set model.compute_dtype=bfloat16

Per (model, batch), in a fresh process: `steps` train steps fused into one `lax.scan`
(cvae_jax.training.step.make_multi_step, the `fused` mode of benchmarks.throughput, on random device-resident
data) and, in scans of the same length, each piece alone — forward + backward (`grad`), the optimizer
update (`update`), the on-device batch gather (`gather`) — as ms per step (median over `repeats`
calls, blocking on the result). Also the compiled step's kernel counts (XLA fusions and library
calls such as cuBLAS GEMMs, read from the compiled HLO) and the achieved FLOP/s. Pieces do not add
up exactly to the step: XLA fuses across their borders.

`--ops N` also traces one call of the step (jax.profiler, no extra packages) and lists the N
compiled ops (XLA instructions: fusions, dots, library calls) that took longest, as ms per step,
with each op's shape and the JAX operation it came from. On XLA:CPU independent ops run at the same
time on different threads, and ops handed to a thread pool (Eigen's dots) show only their launch:
read the list as "where to look", not as parts that sum to the step.

    python -m benchmarks.step_profile --model article-cvae --batch-size 128 --ops 12
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time

ROWS = ("step", "grad", "update", "gather")


def _median_ms(fn, steps: int, repeats: int) -> float:
    from benchmarks.jax_cell import _timed

    _timed(fn)  # warm-up
    return 1e3 * statistics.median(_timed(fn) for _ in range(repeats)) / steps


def kernel_counts(hlo: str) -> dict[str, int]:
    """Fusions and library calls (custom-calls: cuBLAS/cuDNN, oneDNN ...) in a compiled module's text."""

    def count(op: str) -> int:  # instructions `name = <type, maybe a tuple> op(operands)`, one per line
        return len(re.findall(rf"= [^=\n]* {op}\(", hlo))

    return {"fusions": count("fusion"), "library_calls": count("custom-call")}


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (\S+) ")


def hlo_instructions(hlo: str) -> dict[str, dict[str, str]]:
    """Each instruction of a compiled module's text: its result shape and the JAX operation it came
    from (the op_name metadata, e.g. "jit(run)/while/body/.../Dense_0/dot_general")."""
    found = {}
    for line in hlo.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            op = re.search(r'op_name="([^"]*)"', line)
            found.setdefault(m.group(1), {"shape": m.group(2), "op_name": op.group(1) if op else ""})
    return found


def op_times(trace_events: list[dict], instructions: dict[str, dict[str, str]], steps: int, top: int) -> list[dict]:
    """The `top` compiled instructions by total traced time ("X" events named after them), as ms
    and calls per step, longest first; events of anything else (Python, the runtime) are left out."""
    total: dict[str, float] = {}
    calls: dict[str, int] = {}
    for e in trace_events:
        name = e.get("name")
        if e.get("ph") == "X" and name in instructions:
            total[name] = total.get(name, 0.0) + float(e.get("dur", 0.0))  # microseconds
            calls[name] = calls.get(name, 0) + 1
    ranked = sorted(total, key=total.get, reverse=True)[:top]
    return [
        {"name": n, "ms_per_step": total[n] / 1e3 / steps, "calls_per_step": calls[n] / steps, **instructions[n]}
        for n in ranked
    ]


def traced_op_times(fn, hlo: str, steps: int, top: int) -> list[dict]:
    """Run fn() once under jax.profiler.trace and rank the compiled module's ops by time (op_times)."""
    import glob
    import gzip
    import tempfile

    import jax

    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(fn())
        paths = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
        if not paths:
            raise RuntimeError(f"jax.profiler wrote no *.trace.json.gz under {tmp}: cannot rank ops")
        with gzip.open(paths[0]) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return op_times(events, hlo_instructions(hlo), steps, top)


def profile(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.common import training_data
    from benchmarks.jax_cell import _device_info
    from benchmarks.models import IMAGE_SHAPE, NUM_CLASSES, config_for, training_flops_per_sample
    from cvae_jax.tasks.images import build, init_for
    from cvae_jax.training.step import gather_batch, make_multi_step, make_train_step

    batch, steps, repeats = int(spec["batch"]), int(spec.get("steps", 50)), int(spec.get("repeats", 7))
    config = config_for(spec["model"], batch, spec.get("set", []))
    parts = build(config, IMAGE_SHAPE, NUM_CLASSES)
    state = init_for(parts, config, IMAGE_SHAPE, NUM_CLASSES)
    n = batch * steps
    images, labels = training_data(n, batch)
    data = {"image": jnp.asarray(images), "label": jnp.asarray(labels.astype(np.int32))}
    perm = jnp.asarray(np.random.default_rng(1).permutation(n).astype(np.int32))
    key = jax.random.key(0)
    tx, c = parts.tx, config.train

    train = make_multi_step(
        make_train_step(parts.loss, tx, microbatches=c.microbatches, unroll_microbatches=c.unroll_microbatches),
        batch,
        steps,
    )
    t = time.perf_counter()
    compiled = jax.jit(train, donate_argnums=0).lower(state, data, perm, 0, key).compile()
    compile_s = time.perf_counter() - t
    live = [jax.tree.map(jnp.copy, state)]  # the compiled step donates (consumes) its state

    def run_steps():
        live[0], _ = compiled(live[0], data, perm, 0, key)
        return live[0]

    def grads(params):
        grad_fn = jax.grad(parts.loss, has_aux=True)

        def body(total, i):
            g, _ = grad_fn(params, gather_batch(data, perm, i, batch), jax.random.fold_in(key, i), i)
            return jax.tree.map(jnp.add, total, g), None  # summed, so that no step is dead code

        return jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), jnp.arange(steps))[0]

    def updates(params, opt_state):
        def body(carry, i):
            p, o = carry
            u, o = tx.update(jax.tree.map(lambda v: v * 1e-3 + i, p), o, p)
            return (jax.tree.map(jnp.add, p, u), o), None

        return jax.lax.scan(body, (params, opt_state), jnp.arange(steps))[0]

    def gathers():
        def body(total, i):
            b = gather_batch(data, perm, i, batch)
            return total + jnp.sum(b["image"][:, 0, 0, 0]) + jnp.sum(b["label"]), None

        return jax.lax.scan(body, jnp.zeros((), jnp.float32), jnp.arange(steps))[0]

    p, o = state.params, state.opt_state  # the undonated original
    g_fn, u_fn, d_fn = jax.jit(grads), jax.jit(updates), jax.jit(gathers)
    ms = {
        "step": _median_ms(run_steps, steps, repeats),
        "grad": _median_ms(lambda: g_fn(p), steps, repeats),
        "update": _median_ms(lambda: u_fn(p, o), steps, repeats),
        "gather": _median_ms(d_fn, steps, repeats),
    }
    hlo = compiled.as_text()
    ops = traced_op_times(run_steps, hlo, steps, int(spec["ops"])) if spec.get("ops") else []
    flops = training_flops_per_sample(parts.model, p)
    samples_per_s = batch / (ms["step"] / 1e3)
    return {
        "kind": "step_profile",
        "model": spec["model"],
        "batch": batch,
        "set": spec.get("set", []),
        "steps": steps,
        **{f"{k}_ms": v for k, v in ms.items()},
        "samples_per_s": samples_per_s,
        "achieved_flops_per_s": flops * samples_per_s,
        "train_flops_per_sample": flops,
        "compile_s": compile_s,
        **kernel_counts(hlo),
        "ops": ops,
        **_device_info(),
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks import common
    from benchmarks.throughput import _csv, check_choices

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=_csv(str), default=["mlp-vae"])
    p.add_argument("--batch-size", type=_csv(int), default=[4096])
    p.add_argument("--steps", type=int, default=50, help="steps per compiled scan")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per piece (median)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    p.add_argument(
        "--ops",
        type=int,
        default=0,
        metavar="N",
        help="also list the N compiled ops that took longest in one traced call",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per (model, batch)")
    args = p.parse_args(argv)
    from benchmarks.models import MODELS

    check_choices(p, "--model", args.model, MODELS)
    if args.steps < 1 or args.repeats < 1 or any(b < 1 for b in args.batch_size):
        p.error("--steps, --repeats and --batch-size must be >= 1")
    if args.ops < 0:
        p.error("--ops must be >= 0 (0: no op list)")
    print(
        "| model | batch | step ms | grad ms | update ms | gather ms | samples/s | GFLOP/s | fusions | "
        "library calls |\n|---|---|---|---|---|---|---|---|---|---|",
        file=sys.stderr if args.json else sys.stdout,
        flush=True,
    )
    failed, op_lists = 0, []
    for model in args.model:
        for batch in args.batch_size:
            spec = {
                "model": model,
                "batch": batch,
                "steps": args.steps,
                "repeats": args.repeats,
                "set": args.set,
                "ops": args.ops,
            }
            r = common.run_cell("benchmarks.step_profile", [json.dumps(spec)])  # a fresh process per cell
            if r.get("kind") == "error":
                failed += 1
                print(f"cell failed: {r}", file=sys.stderr)
                continue
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(
                    f"| {model} | {batch} | "
                    + " | ".join(f"{r[f'{k}_ms']:.3f}" for k in ROWS)
                    + f" | {r['samples_per_s']:,.0f} | {r['achieved_flops_per_s'] / 1e9:,.0f} | {r['fusions']} | "
                    f"{r['library_calls']} |",
                    flush=True,
                )
                op_lists.append((model, batch, r["ops"]))
    for model, batch, ops in op_lists if args.ops else []:
        print(ops_table(model, batch, ops))
    return 1 if failed else 0


def ops_table(model: str, batch: int, ops: list[dict]) -> str:
    """The longest ops of one profiled step as a markdown table (the JAX operation shortened to the
    part after the scan body's prefix)."""
    lines = [
        f"\n{model}, batch {batch}: the longest compiled ops (one traced call; times overlap on CPU)\n",
        "| ms/step | calls/step | op | shape | from |",
        "|---|---|---|---|---|",
    ]
    for o in ops:
        origin = o["op_name"].split("/body/", 1)[-1].replace("closed_call/", "")
        lines.append(f"| {o['ms_per_step']:.3f} | {o['calls_per_step']:g} | {o['name']} | {o['shape']} | {origin} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        from benchmarks.jax_cell import no_compile_cache
        from cvae_jax.cli.host import keep_freed_memory

        keep_freed_memory()
        no_compile_cache()
        print(json.dumps(profile(json.loads(sys.argv[1]))))
    else:
        sys.exit(main())
