"""The importance-sampled test NLL of a trained MLP VAE: cvae_jax against a PyTorch reference of the
same model, the same weights and the same binarized test images, side by side.

    cvae-jax train --model vae --set data.binarize=true --set model.latent_dim=32 \\
        --set data.source=idx --set data.path=/usr/share/datasets/fashion-mnist --workdir runs/fm_vae
    python -m benchmarks.nll_eval --workdir runs/fm_vae --num-importance-samples 1000 --num-examples 2000

The test images are binarized once (seed 0) and both implementations score those bits with the
run's weights, so their estimates of -log p(x) agree up to Monte Carlo noise (a check that they
compute the same thing). Each implementation runs in its own fresh process, alternated over
`--rounds`; the time is the scoring of all images after one warm-up batch (compilation apart).
PyTorch (`pip install -e ".[compare]"`) is written as its users would: inference mode, batched
decoder calls, flushed denormals, at its best chunk size on this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def export(workdir: str, num_examples: int, out: Path) -> None:
    """The run's MLP weights (as [in, out] kernels, by layer) and a fixed binarization of its test images."""
    import jax

    from cvae_jax.data import images as data
    from cvae_jax.training.images import load_run

    run = load_run(workdir, "latest")
    m = run.config.model
    if (
        m.kind != "vae"
        or m.encoder_conv
        or m.decoder_conv
        or m.likelihood != "bernoulli"
        or m.prior != "standard_normal"
    ):
        raise SystemExit("nll_eval compares MLP VAEs with a Bernoulli likelihood and a standard normal prior")
    params = jax.device_get(run.params)["params"]
    test = data.load(run.config.data).test
    x = test.images[:num_examples].reshape(min(num_examples, len(test)), -1)
    bits = (np.random.default_rng(0).uniform(size=x.shape) < x).astype(np.float32)
    arrays = {"bits": bits}
    for side in ("encoder", "decoder"):
        names = sorted((k for k in params[side] if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
        names += ["mean", "log_var"] if side == "encoder" else ["out"]
        for i, name in enumerate(names):
            arrays[f"{side}/{i:02d}/{name}/kernel"] = np.asarray(params[side][name]["kernel"])
            arrays[f"{side}/{i:02d}/{name}/bias"] = np.asarray(params[side][name]["bias"])
    np.savez(out, **arrays)


def run_jax(workdir: str, data_file: str, k: int, chunk: int, batch: int) -> dict:
    import jax

    from cvae_jax.apps.evaluate import make_log_likelihood
    from cvae_jax.training.images import load_run

    run = load_run(workdir, "latest")
    bits = np.load(data_file)["bits"]
    images = bits.reshape(-1, *run.meta["image_shape"])
    log_px = jax.jit(
        make_log_likelihood(run.model, num_classes=int(run.meta["num_classes"]), num_samples=k, chunk=chunk)
    )
    key = jax.random.key(0)

    def score(i):
        return log_px(
            run.params, {"image": images[i : i + batch], "label": np.zeros(batch, np.int32)}, jax.random.fold_in(key, i)
        )

    start = time.perf_counter()
    jax.block_until_ready(score(0))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    values = [score(i) for i in range(0, len(images), batch)]
    ll = np.concatenate([np.asarray(v) for v in values])
    return {
        "impl": "cvae_jax",
        "seconds": time.perf_counter() - start,
        "compile_s": compile_s,
        "nll": float(-ll.mean()),
    }


def run_torch(data_file: str, k: int, chunk: int, batch: int) -> dict:
    import torch

    torch.set_flush_denormal(True)
    arrays = np.load(data_file)

    def layers(side):
        names = sorted({"/".join(key.split("/")[:3]) for key in arrays.files if key.startswith(side + "/")})
        return [
            (torch.from_numpy(arrays[f"{n}/kernel"]).T.contiguous(), torch.from_numpy(arrays[f"{n}/bias"]))
            for n in names
        ]

    encoder, decoder = layers("encoder"), layers("decoder")
    *enc_hidden, (w_mean, b_mean), (w_log_var, b_log_var) = encoder
    *dec_hidden, (w_out, b_out) = decoder
    bits = torch.from_numpy(arrays["bits"])
    latent = w_mean.shape[0]
    log_2pi = math.log(2 * math.pi)
    generator = torch.Generator().manual_seed(0)

    def mlp(h, hidden):
        for w, b in hidden:
            h = torch.relu(torch.nn.functional.linear(h, w, b))
        return h

    @torch.inference_mode()
    def log_px(x):
        h = mlp(x, enc_hidden)
        mean, log_var = (
            torch.nn.functional.linear(h, w_mean, b_mean),
            torch.nn.functional.linear(h, w_log_var, b_log_var),
        )
        std, acc = torch.exp(0.5 * log_var), torch.full((x.shape[0],), -math.inf)
        for _ in range(k // chunk):
            eps = torch.randn(chunk, *mean.shape, generator=generator)
            z = mean + std * eps
            logits = torch.nn.functional.linear(mlp(z.reshape(-1, latent), dec_hidden), w_out, b_out)
            logits = logits.reshape(chunk, x.shape[0], -1)
            log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="none"
            ).sum(-1)
            log_prior = -0.5 * (z * z + log_2pi).sum(-1)
            log_q = -0.5 * (eps * eps + log_var + log_2pi).sum(-1)
            acc = torch.logaddexp(acc, torch.logsumexp(log_lik + log_prior - log_q, 0))
        return acc - math.log(k)

    start = time.perf_counter()
    log_px(bits[:batch])
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    ll = torch.cat([log_px(bits[i : i + batch]) for i in range(0, len(bits), batch)])
    return {
        "impl": "torch",
        "seconds": time.perf_counter() - start,
        "compile_s": compile_s,
        "nll": float(-ll.mean()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a trained MLP VAE run (Bernoulli likelihood, N(0, I) prior)")
    p.add_argument("--num-importance-samples", type=int, default=1000)
    p.add_argument("--num-examples", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=100, help="test images per compiled call")
    p.add_argument("--chunk", type=int, default=20, help="cvae_jax: samples decoded per scan step")
    p.add_argument("--torch-chunk", type=int, default=20, help="PyTorch: samples decoded per decoder call")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", help="also append the records (JSON lines) to this file")
    p.add_argument("--cell", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cell:
        spec = json.loads(args.cell)
        if spec["impl"] == "torch":
            result = run_torch(spec["data"], args.num_importance_samples, args.torch_chunk, args.batch)
        else:
            result = run_jax(args.workdir, spec["data"], args.num_importance_samples, args.chunk, args.batch)
        from benchmarks.common import host_cpu

        chunk = args.torch_chunk if spec["impl"] == "torch" else args.chunk
        print(
            json.dumps(
                {
                    "kind": "nll_eval",
                    **result,
                    "k": args.num_importance_samples,
                    "chunk": chunk,
                    "batch": args.batch,
                    "num_examples": spec["num_examples"],
                    "platform": "cpu",
                    **host_cpu(),
                }
            )
        )
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "bits_and_weights.npz"
        export(args.workdir, args.num_examples, data_file)
        num_examples = len(np.load(data_file)["bits"])
        results = []
        for _ in range(args.rounds):
            for impl in ("cvae_jax", "torch"):
                cell = json.dumps({"impl": impl, "data": str(data_file), "num_examples": num_examples})
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks.nll_eval", *(argv or sys.argv[1:]), "--cell", cell],
                    capture_output=True,
                    text=True,
                )
                lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                if proc.returncode or not lines:
                    raise SystemExit(f"{impl} failed: {proc.stderr[-2000:]}")
                results.append({**json.loads(lines[-1]), "round": len(results) // 2})
                print(json.dumps(results[-1]), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(results[-1]) + "\n")
    by_impl = {impl: [r for r in results if r["impl"] == impl] for impl in ("cvae_jax", "torch")}
    seconds = {impl: statistics.median(r["seconds"] for r in rs) for impl, rs in by_impl.items()}
    print(f"| impl | seconds (median of {args.rounds}) | test NLL (nats) |\n|---|---|---|")
    for impl, rs in by_impl.items():
        print(f"| {impl} | {seconds[impl]:.2f} | {statistics.median(r['nll'] for r in rs):.2f} |")
    print(
        f"cvae_jax is {seconds['torch'] / seconds['cvae_jax']:.2f}x PyTorch's speed "
        f"(K = {args.num_importance_samples}, {args.num_examples} images)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
