"""cvae_jax: Variational Autoencoders and Conditional VAEs in JAX/Flax, at accelerator speed."""

from cvae_jax.host import keep_freed_memory

keep_freed_memory()  # before JAX allocates: see cvae_jax/host.py (opt out: CVAE_JAX_KEEP_FREED_MEMORY=0)

from cvae_jax.config import Config, ConfigError, apply_overrides, get_config  # noqa: E402
from cvae_jax.models import CVAE, VAE, Decoder, Encoder, build_model  # noqa: E402
from cvae_jax.run import load, train_and_evaluate  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CVAE", "VAE", "Config", "ConfigError", "Decoder", "Encoder", "apply_overrides", "build_model",
           "get_config", "keep_freed_memory", "load", "train_and_evaluate"]
