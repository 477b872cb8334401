"""A measured lead, not adopted: the article CVAE's encoder front end, blocked by image rows.

    python -m benchmarks.blocked_front_end --batch-size 128 --rows 1,2,4,7,14

The article CVAE's step on XLA:CPU is dominated by its front end: a 3x3, 1 -> 32 convolution, a
ReLU and a 25,088 -> 64 dense layer. At batch 128 each [128, 25,088] activation is 12.8 MB, larger
than this machine's caches, and the step makes about a dozen passes over such arrays (convolution,
ReLU, forward product, input gradient, ReLU mask, kernel gradients). This script times, in one
process and alternated, the gradient of that front end

- as the library computes it (`cvae_jax.nn.tuned`'s conv, ReLU, a plain dense product), and
- as one custom-VJP op over blocks of `rows` image rows: per block, the convolution as a patch
  matmul, the ReLU and the partial product (forward); the same recomputed, then the block's kernel
  gradient, input gradient, mask and convolution gradients (backward), so that no full-size
  activation is ever written.

Both run `steps` gradient steps in one compiled fori_loop; the table gives ms per step (median of
`repeats` alternations) and the largest relative difference of the gradients.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from cvae_jax.nn import tuned as layers

HEIGHT = WIDTH = 28
CHANNELS, OUT = 32, 64


def library_front_end(params, x):
    kernel, bias, dense = params
    h = jax.nn.relu(layers.conv(x, kernel, 1) + bias).reshape(x.shape[0], -1)
    return h @ dense


def blocked_front_end(rows: int):
    """The front end as a custom-VJP op over blocks of `rows` image rows (rows must divide 28)."""
    blocks = HEIGHT // rows

    def patches(padded, j):  # [B * rows * W, 9]: the 3x3 taps of output rows j*rows .. j*rows + rows - 1
        band = jax.lax.dynamic_slice_in_dim(padded, j * rows, rows + 2, axis=1)
        taps = [band[:, p : p + rows, q : q + WIDTH, :] for p in range(3) for q in range(3)]
        return jnp.concatenate(taps, axis=-1).reshape(-1, 9)

    def pre_activation(padded, j, kernel, bias):
        return (patches(padded, j) @ kernel.reshape(9, CHANNELS) + bias).reshape(padded.shape[0], -1)

    def forward(kernel, bias, dense, x):
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        dense_blocks = dense.reshape(blocks, -1, OUT)

        def body(y, j):
            return y + jax.nn.relu(pre_activation(padded, j, kernel, bias)) @ dense_blocks[j], None

        return jax.lax.scan(body, jnp.zeros((x.shape[0], OUT)), jnp.arange(blocks))[0]

    @jax.custom_vjp
    def front_end(kernel, bias, dense, x):
        return forward(kernel, bias, dense, x)

    def fwd(kernel, bias, dense, x):
        return forward(kernel, bias, dense, x), (kernel, bias, dense, x)

    def bwd(residuals, grad):
        kernel, bias, dense, x = residuals
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        dense_blocks = dense.reshape(blocks, -1, OUT)

        def body(carry, j):
            d_kernel, d_bias = carry
            a = pre_activation(padded, j, kernel, bias)
            d_dense = jax.nn.relu(a).T @ grad
            masked = jnp.where(a > 0, grad @ dense_blocks[j].T, 0.0).reshape(-1, CHANNELS)
            d_kernel = d_kernel + (masked.T @ patches(padded, j)).T
            return (d_kernel, d_bias + masked.sum(0)), d_dense

        (d_kernel, d_bias), d_dense = jax.lax.scan(
            body, (jnp.zeros((9, CHANNELS)), jnp.zeros(CHANNELS)), jnp.arange(blocks)
        )
        return d_kernel.reshape(kernel.shape), d_bias, d_dense.reshape(dense.shape), jnp.zeros_like(x)

    front_end.defvjp(fwd, bwd)
    return lambda params, x: front_end(*params, x)


def timed_steps(front_end, readout, steps: int):
    """A compiled run(params, x) of `steps` gradient steps on sum(front_end(params, x) * readout)."""

    def run(params, x):
        def body(i, p):
            g = jax.grad(lambda p: jnp.sum(front_end(p, x * (1 + i * 1e-6)) * readout))(p)
            return jax.tree.map(lambda a, b: a - 1e-6 * b, p, g)

        return jax.lax.fori_loop(0, steps, body, params)

    return jax.jit(run)


def measure(batch: int, rows: int, steps: int, repeats: int) -> dict:
    keys = jax.random.split(jax.random.key(0), 5)
    x = jax.random.uniform(keys[0], (batch, HEIGHT, WIDTH, 1))
    params = (
        0.3 * jax.random.normal(keys[1], (3, 3, 1, CHANNELS)),
        0.1 * jax.random.normal(keys[2], (CHANNELS,)),
        0.01 * jax.random.normal(keys[3], (HEIGHT * WIDTH * CHANNELS, OUT)),
    )
    readout = jax.random.normal(keys[4], (batch, OUT))
    variants = {"library": library_front_end, "blocked": blocked_front_end(rows)}
    grads = {n: jax.grad(lambda p, f=f: jnp.sum(f(p, x) * readout))(params) for n, f in variants.items()}
    diff = max(float(jnp.abs(a - b).max() / jnp.abs(a).max()) for a, b in zip(grads["library"], grads["blocked"]))
    runs = {n: timed_steps(f, readout, steps) for n, f in variants.items()}
    for run in runs.values():
        jax.block_until_ready(run(params, x))
    ms = {n: [] for n in runs}
    for _ in range(repeats):
        for n, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run(params, x))
            ms[n].append(1e3 * (time.perf_counter() - start) / steps)
    return {
        "batch": batch,
        "rows": rows,
        "max_rel_grad_diff": diff,
        **{f"{n}_ms": statistics.median(v) for n, v in ms.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=lambda s: [int(v) for v in s.split(",")], default=[128])
    p.add_argument(
        "--rows",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[2, 4],
        help="image rows per block (each must divide 28)",
    )
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    bad = [r for r in args.rows if r < 1 or HEIGHT % r]
    if bad:
        p.error(f"--rows must divide {HEIGHT}, got {bad}")
    print("| batch | rows | library ms | blocked ms | blocked / library | max rel. grad diff |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch_size:
        for rows in args.rows:
            r = measure(batch, rows, args.steps, args.repeats)
            print(
                f"| {batch} | {rows} | {r['library_ms']:.2f} | {r['blocked_ms']:.2f} | "
                f"{r['blocked_ms'] / r['library_ms']:.2f} | {r['max_rel_grad_diff']:.1e} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
