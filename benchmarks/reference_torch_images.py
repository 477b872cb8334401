"""The ResNet VAE of cvae_jax.core.resnet in PyTorch, layer for layer, with the same discretized
logistic mixture likelihood, and the sprites preset's conv VAE (Locatello et al. 2019's: 4 x 4 convs
32-32-64-64 of stride 2, dense 256, latent 10, its transpose, Bernoulli pixels), for
benchmarks/image_models.py (needs `pip install -e ".[compare]"`).

The one difference: a stride-2 3x3 convolution pads (1, 1) here and (0, 1) in XLA's "SAME"; the
output size, parameter count and FLOPs are the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """x + g * conv3x3(silu(conv3x3(silu(x)))), g a learned scalar starting at 0 (ReZero)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + self.gate * self.conv2(F.silu(self.conv1(F.silu(x))))


def discretized_logistic_mixture_nll(x, params, mixtures: int, bins: int = 256):
    """-log p(x) summed per image; x [B, C, H, W] in [0, 1], params [B, C * 3 * K, H, W] (cvae_jax's
    channel order: per image channel, logits, locations, log-scales of the K components)."""
    b, c, h, w = x.shape
    params = params.reshape(b, c, 3, mixtures, h, w).float()
    logits, loc, log_scale = params[:, :, 0], params[:, :, 1], params[:, :, 2].clamp(min=-7.0)
    y = (2 * x - 1).unsqueeze(2)
    half = 1.0 / (bins - 1)
    inv = torch.exp(-log_scale)
    centred = y - loc
    upper, lower = inv * (centred + half), inv * (centred - half)
    log_cdf_upper = upper - F.softplus(upper)
    log_survival_lower = -F.softplus(lower)
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    middle = inv * centred
    log_density = middle - log_scale - 2 * F.softplus(middle) + math.log(2 * half)
    log_inner = torch.where(mass > 1e-5, torch.log(mass.clamp(min=1e-12)), log_density)
    log_probs = torch.where(y < -1 + half, log_cdf_upper, torch.where(y > 1 - half, log_survival_lower, log_inner))
    mixed = torch.logsumexp(log_probs + F.log_softmax(logits, dim=2), dim=2)
    return -mixed.flatten(1).sum(1)


class ResNetVAE(nn.Module):
    def __init__(self, shape, widths=(64, 128, 256), blocks=2, latent=64, mixtures=10):
        super().__init__()
        height, width, channels = shape
        self.latent, self.mixtures, self.widths = latent, mixtures, widths
        scale = 2 ** (len(widths) - 1)
        self.grid = (widths[-1], height // scale, width // scale)
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.enc = nn.ModuleList(nn.Sequential(*[Block(w) for _ in range(blocks)]) for w in widths)
        self.downs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1) for i in range(len(widths) - 1))
        features = math.prod(self.grid)
        self.mean, self.log_var = nn.Linear(features, latent), nn.Linear(features, latent)
        self.to_grid = nn.Linear(latent, features)
        self.dec = nn.ModuleList(nn.Sequential(*[Block(w) for _ in range(blocks)]) for w in widths)
        self.ups = nn.ModuleList(nn.Conv2d(widths[i], widths[i - 1], 3, padding=1) for i in range(1, len(widths)))
        self.out = nn.Conv2d(widths[0], channels * 3 * mixtures, 3, padding=1)

    def forward(self, x):
        """The negative ELBO (nats per image, batch mean): discretized logistic mixture, analytic KL."""
        h = self.stem(x)
        for i, stage in enumerate(self.enc):
            h = stage(h)
            if i < len(self.downs):
                h = self.downs[i](F.silu(h))
        h = F.silu(h).flatten(1)
        mean, log_var = self.mean(h), self.log_var(h)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        h = self.to_grid(z).view(-1, *self.grid)
        for i in reversed(range(len(self.widths))):
            h = self.dec[i](h)
            if i > 0:
                h = self.ups[i - 1](F.interpolate(h, scale_factor=2, mode="nearest"))
        params = self.out(F.silu(h))
        recon = discretized_logistic_mixture_nll(x, params, self.mixtures)
        kl = 0.5 * (torch.exp(log_var.float()) + mean.float() ** 2 - 1.0 - log_var.float()).sum(1)
        return (recon + kl).mean()


class SpritesVAE(nn.Module):
    """cvae_jax's `sprites` preset layer for layer: the encoder's convs, dense 256, (mean, log_var);
    the decoder's dense 256, dense to 4 x 4 x 64, transposed convs 64-32-32-32, a 3 x 3 conv to logits."""

    def __init__(self, shape=(64, 64, 1), conv=(32, 32, 64, 64), hidden=256, latent=10, up=(64, 32, 32, 32)):
        super().__init__()
        height, width, channels = shape
        widths = (channels, *conv)
        self.enc = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1) for i in range(len(conv)))
        scale = 2 ** len(conv)
        self.enc_dense = nn.Linear(conv[-1] * (height // scale) * (width // scale), hidden)
        self.head = nn.Linear(hidden, 2 * latent)
        self.grid = (up[0], height // 2 ** len(up), width // 2 ** len(up))
        self.dec_dense = nn.Linear(latent, hidden)
        self.to_grid = nn.Linear(hidden, math.prod(self.grid))
        widths = (up[0], *up)
        self.dec = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1) for i in range(len(up)))
        self.out = nn.Conv2d(up[-1], channels, 3, padding=1)

    def forward(self, x):
        """The negative ELBO (nats per image, batch mean): Bernoulli pixels, analytic KL."""
        h = x
        for conv in self.enc:
            h = F.relu(conv(h))
        h = F.relu(self.enc_dense(h.flatten(1)))
        mean, log_var = self.head(h).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        h = F.relu(self.to_grid(F.relu(self.dec_dense(z)))).view(-1, *self.grid)
        for conv in self.dec:
            h = F.relu(conv(h))
        logits = self.out(h)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (torch.exp(log_var) + mean**2 - 1.0 - log_var).sum(1)
        return (recon + kl).mean()
