"""Write your own posterior: planar normalizing flows (Rezende & Mohamed 2015, "Variational Inference
with Normalizing Flows") on the encoder's diagonal Gaussian, z = f_L(...f_1(z0)), z0 ~ N(mean, diag
exp(log_var)), each f(z) = z + u tanh(w.z + b), with

    log q(z | x) = log N(z0 | mean, diag exp(log_var)) - sum_l log |1 + u_l'.w_l (1 - tanh(w_l.z + b_l)^2)|,

u_l constrained so that every f_l is invertible (their appendix A). Registered by name, so that it
trains from the command line and from Python without touching library code:

    cvae-jax train --plugin experiments/custom_posterior.py --set model.posterior=planar --workdir runs/planar
    cvae-jax evaluate --plugin experiments/custom_posterior.py --workdir runs/planar   # IS-NLL with this q
    python experiments/custom_posterior.py [--epochs 30]

The ELBO's KL becomes log q(z | x) - log p(z) at the sample, and the importance-sampled likelihood
weighs each sample by its own log q. docs/posteriors.md walks through this file.
"""

import argparse
import json

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.config import apply_overrides, get_config
from cvae_jax.core import distributions, posteriors

NUM_FLOWS = 4


class PlanarFlows(posteriors.Posterior):
    num_flows: int = NUM_FLOWS

    def setup(self):
        init = nn.initializers.normal(0.01)
        self.u = self.param("u", init, (self.num_flows, self.latent_dim))
        self.w = self.param("w", init, (self.num_flows, self.latent_dim))
        self.b = self.param("b", nn.initializers.zeros, (self.num_flows,))

    def invertible_u(self):
        """u + (m(w.u) - w.u) w / |w|^2, m(a) = -1 + softplus(a): then w.u > -1 and f is invertible."""
        wu = jnp.sum(self.w * self.u, -1, keepdims=True)
        return self.u + (-1.0 + jax.nn.softplus(wu) - wu) * self.w / jnp.sum(self.w**2, -1, keepdims=True)

    def sample(self, key, mean, log_var, num_samples: int):
        eps = distributions.normal(key, (num_samples, *mean.shape), mean.dtype)
        z = mean + jnp.exp(0.5 * log_var) * eps
        log_q = distributions.diag_gaussian_log_prob(z, mean, log_var)
        u = self.invertible_u()
        for flow in range(self.num_flows):
            h = jnp.tanh(z @ self.w[flow] + self.b[flow])  # [K, B]
            log_q = log_q - jnp.log(jnp.abs(1.0 + (1.0 - h**2) * jnp.dot(u[flow], self.w[flow])) + 1e-8)
            z = z + h[..., None] * u[flow]
        return z, log_q


@posteriors.register("planar")
def make_planar(model_cfg):
    return PlanarFlows(model_cfg.latent_dim)


def main() -> None:
    from cvae_jax.apps import evaluate
    from cvae_jax.data import images as data
    from cvae_jax.tasks.images import train_and_evaluate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    dataset = data.load_npz(data.embedded_path())
    cfg = apply_overrides(get_config("vae"), ["model.posterior=planar", f"train.epochs={args.epochs}"])
    run = train_and_evaluate(cfg, args.workdir, dataset=dataset, progress=True)
    result = evaluate.evaluate_model(run.model, run.state.params, cfg, dataset, num_importance_samples=200)
    print(json.dumps({k: v for k, v in result.items() if k != "kl_per_dim"}, indent=2))


if __name__ == "__main__":
    main()
