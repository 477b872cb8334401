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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common


def export(workdir: str, num_examples: int, out: Path) -> None:
    """The run's MLP weights (as [in, out] kernels, by layer) and a fixed binarization of its test images."""
    import jax

    from cvae_jax.data import images as data
    from cvae_jax.tasks.images import load_run

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
    from benchmarks.common import _arch

    arch = _arch(latent=m.latent_dim, encoder_hidden=m.encoder_hidden, decoder_hidden=m.decoder_hidden)
    arrays = {"bits": bits, "arch": np.array(json.dumps(arch))}
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
    from cvae_jax.tasks.images import load_run

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

    from benchmarks.reference_torch import VAE, load_weights, log_px

    torch.set_flush_denormal(True)
    arrays = np.load(data_file)
    model = VAE(json.loads(str(arrays["arch"])))
    load_weights(model, arrays)
    model.eval()
    bits = torch.from_numpy(arrays["bits"])
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        start = time.perf_counter()
        log_px(model, bits[:batch], k, chunk, generator)
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        ll = torch.cat([log_px(model, bits[i : i + batch], k, chunk, generator) for i in range(0, len(bits), batch)])
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
                try:
                    found = common.run_in_fresh_process(
                        ["-m", "benchmarks.nll_eval", *(argv or sys.argv[1:]), "--cell", cell]
                    )
                except common.CellError as e:
                    raise SystemExit(f"{impl}: {e}") from None
                results.append({**found, "round": len(results) // 2})
                print(json.dumps(results[-1]), flush=True)
                if args.out:
                    common.append_record(args.out, results[-1])
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
