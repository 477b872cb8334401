"""Write your own objective: the controlled-capacity beta-VAE of Burgess et al. 2018 ("Understanding
disentangling in beta-VAE"), loss = recon + gamma * |KL - C(step)|, the capacity C growing linearly
from 0 to C_MAX nats over train.warmup_steps. Registered by name, so that it trains from the command
line and from Python without touching library code:

    cvae-jax train --plugin experiments/custom_objective.py --set train.objective=capacity \
        --set train.beta=30 --set train.warmup_steps=2000 --workdir runs/capacity
    cvae-jax evaluate --plugin experiments/custom_objective.py --workdir runs/capacity
    python experiments/custom_objective.py [--epochs 30]

gamma is train.beta. Evaluation reports the ELBO terms as for every objective, so runs stay comparable.
docs/objectives.md walks through this file.
"""

import argparse
import json

import jax.numpy as jnp

from cvae_jax.config import apply_overrides, get_config
from cvae_jax.core import objectives

C_MAX = 25.0  # nats: the capacity reached at the end of the ramp


def capacity(cfg, step) -> jnp.ndarray:
    """C(step): 0 -> C_MAX over cfg.warmup_steps steps, then held."""
    ramp = jnp.clip(jnp.asarray(step, jnp.float32) / max(cfg.warmup_steps, 1), 0.0, 1.0)
    return C_MAX * ramp


@objectives.register("capacity")
def capacity_objective(model, cfg, *, num_classes, binarize, total_steps):
    """(terms, loss): the library's ELBO terms, and the capacity loss built on them."""
    del total_steps
    terms_fn = objectives.make_elbo_terms(model, num_classes=num_classes, binarize=binarize)

    def loss(params, batch, key, step=0):
        terms = terms_fn(params, batch, key)
        kl = jnp.mean(terms["kl"])
        value = jnp.mean(terms["recon"]) + cfg.beta * jnp.abs(kl - capacity(cfg, step))
        metrics = {name: jnp.mean(v) for name, v in terms.items() if v.ndim == 1}
        return value, {**metrics, "loss": value, "capacity": capacity(cfg, step)}

    return terms_fn, loss


def main() -> None:
    from cvae_jax.apps import evaluate
    from cvae_jax.data import images as data
    from cvae_jax.tasks.images import train_and_evaluate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    dataset = data.load_npz(data.embedded_path())
    overrides = ["train.objective=capacity", "train.beta=30", "train.warmup_steps=2000", f"train.epochs={args.epochs}"]
    cfg = apply_overrides(get_config("vae"), overrides)
    run = train_and_evaluate(cfg, args.workdir, dataset=dataset, progress=True)
    result = evaluate.evaluate_model(run.model, run.state.params, cfg, dataset, num_importance_samples=200)
    print(json.dumps({k: v for k, v in result.items() if k != "kl_per_dim"}, indent=2))


if __name__ == "__main__":
    main()
