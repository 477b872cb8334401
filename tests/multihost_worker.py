"""One process of a multi-process run on localhost (JAX's CPU collectives, 2 CPU devices each).

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR OUT.npz [sharded|pmap]

tests/test_parallel.py starts NUM_PROCESSES of these; with NUM_PROCESSES=1 and
XLA_FLAGS=--xla_force_host_platform_device_count=4 it is the single-process reference.
"""

import sys

import jax
import numpy as np

from cvae_jax.config import apply_overrides, get_config
from cvae_jax.training import parallel

pid, num, port, workdir, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
mode = sys.argv[6] if len(sys.argv) > 6 else "sharded"
config = apply_overrides(
    get_config("cvae"),
    [
        "model.latent_dim=4",
        "model.encoder_hidden=64",
        "model.decoder_hidden=64",
        "train.epochs=2",
        "train.batch_size=64",
        "train.eval_batch_size=500",
        "data.source=embedded",
        f"parallel.mode={mode}",
    ]
    + (
        [
            f"parallel.coordinator_address=localhost:{port}",
            f"parallel.num_processes={num}",
            f"parallel.process_id={pid}",
        ]
        if num > 1
        else []
    ),
)
if num > 1:
    jax.config.update("jax_num_cpu_devices", 2)
    assert parallel.initialize(config.parallel)

from cvae_jax.tasks.images import train_and_evaluate  # noqa: E402

run = train_and_evaluate(config, workdir if workdir != "-" else None, progress=False)
leaves = {
    jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(run.state.params)
}
np.savez(
    out,
    devices=jax.device_count(),
    processes=jax.process_count(),
    neg_elbo=np.array([e["neg_elbo"] for e in run.history if e["split"] != "checkpoint"]),
    **leaves,
)
