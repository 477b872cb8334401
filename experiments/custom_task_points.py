"""Write your own task: a VAE on 2-D points from a ring, trained by the library's one trainer
(checkpoints, exact resume, signals, devices, metrics.jsonl) without touching library code.

    python experiments/custom_task_points.py [--epochs 20] [--workdir runs/ring]
    cvae-jax train --task experiments/custom_task_points.py:RingTask --set train.epochs=20 --workdir runs/ring

docs/tasks.md walks through this file.
"""

import argparse
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.config import CheckpointConfig, RunConfig, TrainConfig
from cvae_jax.core import distributions, objectives
from cvae_jax.core.models import VAE
from cvae_jax.core.priors import StandardNormal
from cvae_jax.training.step import make_optimizer
from cvae_jax.training.tasks import Parts, Task
from cvae_jax.training.trainer import fit


@dataclasses.dataclass
class RingConfig(RunConfig):
    """A task's config: its own fields on top of the shared train, parallel, checkpoint and seed."""

    num_points: int = 4096
    latent_dim: int = 2
    hidden: int = 64
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=20, batch_size=128))
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=lambda: CheckpointConfig(every_epochs=5))


class MLP(nn.Module):
    outputs: int
    hidden: int

    @nn.compact
    def __call__(self, x, condition=None):
        h = nn.relu(nn.Dense(self.hidden)(x))
        return jnp.split(nn.Dense(2 * self.outputs)(nn.relu(nn.Dense(self.hidden)(h))), 2, axis=-1)


class PointsVAE(VAE):
    """encode(x) -> (mean, log_var) of q(z | x); decode(z) -> (loc, log_scale) of a Gaussian p(x | z)."""

    def encode(self, x, condition=None):
        return self.encoder(x)

    def decode(self, z, condition=None):
        loc, log_scale = self.decoder(z)
        return {"loc": loc, "log_scale": log_scale}


def ring(num: int, seed: int) -> np.ndarray:
    angle = np.random.default_rng(seed).uniform(0, 2 * np.pi, num)
    return np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32) + 0.05 * np.random.default_rng(
        seed + 1
    ).normal(size=(num, 2)).astype(np.float32)


class RingTask(Task):
    name = "ring"
    # Named here, the config makes the task trainable from the command line, its fields set by --set:
    #   cvae-jax train --task experiments/custom_task_points.py:RingTask --set hidden=32 --set train.epochs=5
    config_class = RingConfig

    def __init__(self, config: RingConfig):
        self.config = config
        self.train_rows = {"x": ring(config.num_points, config.seed)}
        self.test_rows = {"x": ring(1024, config.seed + 100)}

    def build(self, total_steps: int) -> Parts:
        cfg = self.config
        model = PointsVAE(
            encoder=MLP(cfg.latent_dim, cfg.hidden), decoder=MLP(2, cfg.hidden), prior=StandardNormal(cfg.latent_dim)
        )

        def terms(params, batch, key):  # per-example terms, in nats: the library's conventions
            mean, log_var = model.apply(params, batch["x"], method=model.encode)
            z = distributions.sample_diag_gaussian(jax.random.fold_in(key, objectives.LATENT), mean, log_var)
            out = model.apply(params, z, method=model.decode)
            recon = -distributions.gaussian_log_prob(batch["x"], out["loc"], out["log_scale"], event_ndim=1)
            kl = model.apply(params, mean, log_var, z, method=model.kl_to_prior)
            return objectives.elbo_terms(model, recon, kl, mean, log_var)

        loss = objectives.make_elbo_loss(terms, cfg=cfg.train, total_steps=total_steps)
        return Parts(model=model, terms=terms, loss=loss, tx=make_optimizer(cfg.train, total_steps))

    def on_epoch_end(self, epoch, parts, params):
        """An extra test metric: how far decoded prior samples lie from the unit circle."""
        z = jax.random.normal(jax.random.key(epoch), (512, self.config.latent_dim))
        loc = parts.model.apply(params, z, method=parts.model.decode)["loc"]
        return {"ring_distance": float(jnp.mean(jnp.abs(jnp.linalg.norm(loc, axis=-1) - 1.0)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workdir", default="runs/ring")
    args = parser.parse_args()
    config = RingConfig(train=TrainConfig(epochs=args.epochs, batch_size=128))
    fitted = fit(RingTask(config), args.workdir)
    last = [e for e in fitted.history if e["split"] == "test"][-1]
    print(f"test -ELBO {last['neg_elbo']:.3f} nats, prior samples {last['ring_distance']:.3f} from the ring")


if __name__ == "__main__":
    main()
