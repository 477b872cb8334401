"""The benchmark models in PyTorch, trained the way PyTorch users write it: an nn.Module, Adam, and
a standard loop over a shuffled in-memory tensor (optionally torch.compile). Prints one JSON line.

Two protocols: the throughput cell below, and "likelihood" (experiments/likelihood.py): an MLP VAE
trained for a fixed budget on dynamically binarized images, then scored by importance-sampled NLL
and -ELBO on a saved binarization of the test images.
On a CUDA machine the model and the whole data set live on the GPU (the fastest way to feed it;
no host-to-device copies inside the loop) and each epoch ends with torch.cuda.synchronize().

    python -m benchmarks.reference_torch '{"impl": "torch", "model": "article-vae", "batch": 128,
                                           "samples": 60000, "repeats": 5}'

Denormals are flushed (torch.set_flush_denormal(True)): without it PyTorch slows down by up to ~50 %
on the article CVAE after a few hundred steps (BENCHMARK-ANCHORS.md), so this is the faster,
stricter reference. Needs `pip install -e ".[compare]"`.
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import ARCH, IMAGE_SHAPE, NUM_CLASSES, record, training_data


class Encoder(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        h, w, c = IMAGE_SHAPE
        self.a = a
        convs, cin = [], c
        for features in a["encoder_conv"]:
            convs.append(nn.Conv2d(cin, features, 3, stride=a["conv_stride"], padding=1))
            cin, h, w = features, math.ceil(h / a["conv_stride"]), math.ceil(w / a["conv_stride"])
        self.convs = nn.ModuleList(convs)
        width = cin * h * w + (NUM_CLASSES if a["conditional"] and a["condition_site"] == "input" else 0)
        dense = []
        for size in a["encoder_hidden"]:
            dense.append(nn.Linear(width, size))
            width = size
        self.dense = nn.ModuleList(dense)
        width += NUM_CLASSES if a["conditional"] and a["condition_site"] == "head" else 0
        self.mean, self.log_var = nn.Linear(width, a["latent"]), nn.Linear(width, a["latent"])

    def forward(self, x, c):
        h = x
        for conv in self.convs:
            h = F.relu(conv(h))
        h = h.flatten(1)
        if c is not None and self.a["condition_site"] == "input":
            h = torch.cat([h, c], 1)
        for layer in self.dense:
            h = F.relu(layer(h))
        if c is not None and self.a["condition_site"] == "head":
            h = torch.cat([h, c], 1)
        return self.mean(h), self.log_var(h)


class Decoder(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        h, w, c = IMAGE_SHAPE
        self.a, width = a, a["latent"] + (NUM_CLASSES if a["conditional"] else 0)
        dense = []
        for size in a["decoder_hidden"]:
            dense.append(nn.Linear(width, size))
            width = size
        self.dense = nn.ModuleList(dense)
        if a["decoder_conv"]:
            scale = 2 ** len(a["decoder_conv"])
            self.grid = (a["decoder_conv"][0], h // scale, w // scale)
            self.to_grid = nn.Linear(width, math.prod(self.grid))
            ups, cin = [], a["decoder_conv"][0]
            for features in a["decoder_conv"]:
                ups.append(nn.ConvTranspose2d(cin, features, 3, stride=2, padding=1, output_padding=1))
                cin = features
            self.ups = nn.ModuleList(ups)
            self.out = nn.Conv2d(cin, c, 3, padding=1)
        else:
            self.out = nn.Linear(width, h * w * c)

    def forward(self, z, c):
        h = z if c is None else torch.cat([z, c], 1)
        for layer in self.dense:
            h = F.relu(layer(h))
        if self.a["decoder_conv"]:
            h = F.relu(self.to_grid(h)).view(-1, *self.grid)
            for up in self.ups:
                h = F.relu(up(h))
        return self.out(h).flatten(1)


class VAE(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        self.encoder, self.decoder = Encoder(a), Decoder(a)

    def forward(self, x, c=None):
        """The negative ELBO: Bernoulli log-likelihood summed over pixels, analytic KL, batch mean."""
        mean, log_var = self.encoder(x, c)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        logits = self.decoder(z, c)
        recon = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
        kl = 0.5 * (torch.exp(log_var) + mean**2 - 1.0 - log_var).sum(1)
        return (recon + kl).mean()


def log_px(model: VAE, x, k: int, chunk: int, generator) -> torch.Tensor:
    """The importance-sampled log p(x) [B] of an unconditional VAE with a N(0, I) prior: K samples of
    q(z | x), decoded `chunk` at a time (batched decoder calls), combined by a running logsumexp."""
    mean, log_var = model.encoder(x, None)
    std, acc = torch.exp(0.5 * log_var), torch.full((x.shape[0],), -math.inf, device=x.device)
    log_2pi = math.log(2 * math.pi)
    for _ in range(k // chunk):
        eps = torch.randn(chunk, *mean.shape, generator=generator, device=x.device)
        z = mean + std * eps
        logits = model.decoder(z.reshape(-1, mean.shape[1]), None).reshape(chunk, x.shape[0], -1)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x.flatten(1).expand_as(logits), reduction="none").sum(-1)
        log_prior = -0.5 * (z * z + log_2pi).sum(-1)
        log_q = -0.5 * (eps * eps + log_var + log_2pi).sum(-1)
        acc = torch.logaddexp(acc, torch.logsumexp(log_lik + log_prior - log_q, 0))
    return acc - math.log(k)


def load_weights(model: VAE, arrays) -> None:
    """Copies MLP weights exported as `{side}/{index}/{name}/kernel|bias` ([in, out] kernels, by layer;
    benchmarks/nll_eval.py's format) into `model`."""
    layers = {"encoder": [*model.encoder.dense, model.encoder.mean, model.encoder.log_var]}
    layers["decoder"] = [*model.decoder.dense, model.decoder.out]
    with torch.no_grad():
        for side, modules in layers.items():
            names = sorted({"/".join(key.split("/")[:3]) for key in arrays.files if key.startswith(side + "/")})
            if len(names) != len(modules):
                raise ValueError(f"{side}: {len(names)} exported layers for {len(modules)} in the model")
            for name, module in zip(names, modules):
                module.weight.copy_(torch.from_numpy(arrays[f"{name}/kernel"]).T)
                module.bias.copy_(torch.from_numpy(arrays[f"{name}/bias"]))


def score(model: VAE, bits, k: int, chunk: int, batch: int, generator) -> dict:
    """Test NLL (importance-sampled, K = k) and one-sample -ELBO of binary images [N, ...], in nats."""
    model.eval()
    with torch.inference_mode():
        start = time.perf_counter()
        ll = torch.cat([log_px(model, bits[i : i + batch], k, chunk, generator) for i in range(0, len(bits), batch)])
        nll_s = time.perf_counter() - start
        neg_elbo = [model(bits[i : i + 1000]).item() * len(bits[i : i + 1000]) for i in range(0, len(bits), 1000)]
    return {"nll": float(-ll.mean()), "neg_elbo": sum(neg_elbo) / len(bits), "nll_seconds": nll_s}


def likelihood_protocol(spec: dict) -> dict:
    """Trains the MLP VAE `spec["arch"]` with Adam on dynamically binarized training images
    (`spec["train"]`, uint8) for `epochs` epochs of `batch`, then scores the saved test bits."""
    import numpy as np

    torch.manual_seed(int(spec["seed"]))
    torch.set_flush_denormal(True)
    generator = torch.Generator().manual_seed(int(spec["seed"]))
    start = time.perf_counter()
    x_all = torch.from_numpy(np.load(spec["train"])["images"]).float().div_(255.0).flatten(1)
    model = VAE(spec["arch"])
    opt = torch.optim.Adam(model.parameters(), lr=float(spec["learning_rate"]))
    n, batch = len(x_all), int(spec["batch"])
    for _ in range(int(spec["epochs"])):
        perm = torch.randperm(n, generator=generator)
        for i in range(n // batch):
            x = torch.bernoulli(x_all[perm[i * batch : (i + 1) * batch]], generator=generator)
            loss = model(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - start
    bits = np.load(spec["bits"])
    x = np.unpackbits(bits["bits"], axis=1)[: int(spec["num_examples"]), : int(np.prod(bits["shape"][1:]))]
    start = time.perf_counter()
    scores = score(model, torch.from_numpy(x.astype(np.float32)), int(spec["k"]), 20, 100, generator)
    return {
        "impl": "torch",
        **scores,
        "train_seconds": train_s,
        "eval_seconds": time.perf_counter() - start,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def measure(spec: dict) -> dict:
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    a, batch = ARCH[spec["model"]], int(spec["batch"])
    images, labels = training_data(int(spec.get("samples", 60000)), batch, data=spec.get("data", ""))
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)  # NCHW, as PyTorch users store it
    c_all = F.one_hot(torch.from_numpy(labels), NUM_CLASSES).float().to(device) if a["conditional"] else None
    model = VAE(a).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.compile(model) if spec["impl"] == "torch_compile" else model
    n = len(x_all)

    def epoch() -> float:
        start = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for i in range(n // batch):
            idx = perm[i * batch : (i + 1) * batch]
            loss = loss_fn(x_all[idx], None if c_all is None else c_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = epoch()  # warm-up (and torch.compile's compilation)
    times = [epoch() for _ in range(int(spec.get("repeats", 5)))]
    return record(
        spec["impl"],
        spec,
        times,
        first,
        n,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        flush_denormal=True,
        platform=device.type,
        device_kind=torch.cuda.get_device_name() if cuda else "cpu",
        matmul_precision="tf32" if cuda and torch.backends.cuda.matmul.allow_tf32 else "full",
        **({"peak_device_bytes": torch.cuda.max_memory_allocated()} if cuda else {}),
    )


if __name__ == "__main__":
    cell = json.loads(sys.argv[1])
    print(json.dumps(likelihood_protocol(cell) if cell.get("protocol") == "likelihood" else measure(cell)))
