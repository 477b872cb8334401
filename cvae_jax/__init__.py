"""cvae_jax: Variational Autoencoders and Conditional VAEs in JAX/Flax, at accelerator speed."""

from cvae_jax.config import Config, ConfigError, apply_overrides, get_config
from cvae_jax.models import CVAE, VAE, Decoder, Encoder, build_model
from cvae_jax.run import load, train_and_evaluate

__version__ = "0.1.0"
__all__ = ["CVAE", "VAE", "Config", "ConfigError", "Decoder", "Encoder", "apply_overrides", "build_model",
           "get_config", "load", "train_and_evaluate"]
