"""Data sources: images (embedded digits, npz, IDX folders, TFDS), time-series windows, SMILES tokens.

`cvae_jax.data` itself exposes the image data API (`load`, `Dataset`, `Split`, ...)."""

from cvae_jax.data.images import (  # noqa: F401
    DataError,
    Dataset,
    Split,
    as_split,
    embedded_path,
    hold_out,
    load,
    load_idx,
    load_npz,
    load_tfds,
)
