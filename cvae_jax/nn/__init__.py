"""Layers: stock `flax.linen` layers or CPU-tuned gradient kernels, chosen by `model.kernels`; the GRU."""
