"""Where a train step's time goes: the whole step and its pieces, each timed inside a compiled scan.

    python -m benchmarks.step_profile --model mlp-vae --batch-size 4096
    python -m benchmarks.step_profile --model article-cvae,conv-vae --batch-size 128 --set model.compute_dtype=bfloat16

Per (model, batch), in a fresh process: `steps` train steps fused into one `lax.scan`
(cvae_jax.train.make_multi_step, the `fused` mode of benchmarks.throughput, on random device-resident
data) and, in scans of the same length, each piece alone — forward + backward (`grad`), the optimizer
update (`update`), the on-device batch gather (`gather`) — as ms per step (median over `repeats`
calls, blocking on the result). Also the compiled step's kernel counts (XLA fusions and library
calls such as cuBLAS GEMMs, read from the compiled HLO) and the achieved FLOP/s. Pieces do not add
up exactly to the step: XLA fuses across their borders.
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


def profile(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.common import random_data
    from benchmarks.jax_cell import _device_info
    from benchmarks.models import IMAGE_SHAPE, NUM_CLASSES, config_for, training_flops_per_sample
    from cvae_jax.run import build, init_for
    from cvae_jax.train import gather_batch, make_multi_step, make_train_step

    batch, steps, repeats = int(spec["batch"]), int(spec.get("steps", 50)), int(spec.get("repeats", 7))
    config = config_for(spec["model"], batch, spec.get("set", []))
    parts = build(config, IMAGE_SHAPE, NUM_CLASSES)
    state = init_for(parts, config, IMAGE_SHAPE, NUM_CLASSES)
    n = batch * steps
    images, labels = random_data(n, batch)
    data = {"image": jnp.asarray(images), "label": jnp.asarray(labels.astype(np.int32))}
    perm = jnp.asarray(np.random.default_rng(1).permutation(n).astype(np.int32))
    key = jax.random.key(0)
    tx, c = parts.tx, config.train

    train = make_multi_step(make_train_step(parts.loss, tx, microbatches=c.microbatches,
                                            unroll_microbatches=c.unroll_microbatches), batch, steps)
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
    ms = {"step": _median_ms(run_steps, steps, repeats),
          "grad": _median_ms(lambda: g_fn(p), steps, repeats),
          "update": _median_ms(lambda: u_fn(p, o), steps, repeats),
          "gather": _median_ms(d_fn, steps, repeats)}
    flops = training_flops_per_sample(parts.model, p)
    samples_per_s = batch / (ms["step"] / 1e3)
    return {"kind": "step_profile", "model": spec["model"], "batch": batch, "set": spec.get("set", []),
            "steps": steps, **{f"{k}_ms": v for k, v in ms.items()}, "samples_per_s": samples_per_s,
            "achieved_flops_per_s": flops * samples_per_s, "train_flops_per_sample": flops,
            "compile_s": compile_s, **kernel_counts(compiled.as_text()), **_device_info()}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.throughput import _csv, _run_cell, check_choices

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=_csv(str), default=["mlp-vae"])
    p.add_argument("--batch-size", type=_csv(int), default=[4096])
    p.add_argument("--steps", type=int, default=50, help="steps per compiled scan")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per piece (median)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object per (model, batch)")
    args = p.parse_args(argv)
    from benchmarks.models import MODELS
    check_choices(p, "--model", args.model, MODELS)
    if args.steps < 1 or args.repeats < 1 or any(b < 1 for b in args.batch_size):
        p.error("--steps, --repeats and --batch-size must be >= 1")
    print("| model | batch | step ms | grad ms | update ms | gather ms | samples/s | GFLOP/s | fusions | "
          "library calls |\n|---|---|---|---|---|---|---|---|---|---|", file=sys.stderr if args.json else sys.stdout,
          flush=True)
    failed = 0
    for model in args.model:
        for batch in args.batch_size:
            spec = {"model": model, "batch": batch, "steps": args.steps, "repeats": args.repeats, "set": args.set}
            r = _run_cell("benchmarks.step_profile", json.dumps(spec))  # a fresh process per cell
            if r.get("kind") == "error":
                failed += 1
                print(f"cell failed: {r}", file=sys.stderr)
                continue
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"| {model} | {batch} | " + " | ".join(f"{r[f'{k}_ms']:.3f}" for k in ROWS)
                      + f" | {r['samples_per_s']:,.0f} | {r['achieved_flops_per_s'] / 1e9:,.0f} | {r['fusions']} | "
                      f"{r['library_calls']} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        print(json.dumps(profile(json.loads(sys.argv[1]))))
    else:
        sys.exit(main())
