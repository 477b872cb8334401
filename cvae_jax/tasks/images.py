"""Image runs: `train_and_evaluate(config, workdir)` trains the VAE/CVAE of a `Config` on its image
data through the one trainer, and `load(workdir)` reads a trained run back.

`ImageTask` is the image task: rows {"image", "label"}, the ELBO (or IWAE, hybrid) objective of
`cvae_jax.core.objectives`, and the pictures written at the end.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.config import Config, from_dict, validate
from cvae_jax.core import objectives
from cvae_jax.core.models import VAE, build_model
from cvae_jax.data import images as data_lib
from cvae_jax.training import checkpoint, parallel
from cvae_jax.training.step import (
    INIT,
    TrainState,
    base_key,
    evaluation_params,
    init_state,
    make_optimizer,
    purpose_key,
)
from cvae_jax.training.tasks import Parts, Task, fingerprint_arrays
from cvae_jax.training.trainer import fit


def build(config: Config, image_shape, num_classes: int, *, total_steps: int = 1, prior=None) -> Parts:
    """The model, objective and optimizer of `config` (`prior`: a Prior module overriding model.prior)."""
    model = objectives.attach_critic(build_model(config.model, image_shape, num_classes, prior=prior), config.train)
    terms, loss = objectives.make_objective(
        model, config.train, num_classes=num_classes, binarize=config.data.binarize, total_steps=total_steps
    )
    vq = config.model.architecture == "vqvae"
    return Parts(model=model, terms=terms, loss=loss, tx=make_optimizer(config.train, total_steps, vq=vq))


def init_for(parts: Parts, config: Config, image_shape, num_classes: int) -> TrainState:
    example = {"image": jnp.zeros((1, *image_shape), jnp.float32)}
    condition = jnp.zeros((1, num_classes), jnp.float32) if parts.model.conditional else None
    return init_state(parts.model, parts.tx, example, condition, purpose_key(config.seed, INIT))


def check_dataset(dataset: data_lib.Dataset) -> None:
    """Labels in 0..num_classes-1 and one image shape in both splits, or a DataError naming the split."""
    splits = (("train", dataset.train), ("test", dataset.test), ("validation", dataset.validation))
    for name, split in ((name, split) for name, split in splits if split is not None):
        labels = np.asarray(split.labels)
        if labels.size and (labels.min() < 0 or labels.max() >= dataset.num_classes):
            raise data_lib.DataError(
                f"{dataset.name} {name} labels must lie in 0..{dataset.num_classes - 1} "
                f"(num_classes={dataset.num_classes}), got {labels.min()}..{labels.max()}"
            )
        if split.images.shape[1:] != dataset.image_shape:
            raise data_lib.DataError(
                f"{dataset.name} {name} images have shape {split.images.shape[1:]}, "
                f"expected {dataset.image_shape} like the training images"
            )


def _rows(split: data_lib.Split) -> dict[str, np.ndarray]:
    return {"image": split.images, "label": split.labels}


def _fingerprint(d: data_lib.Dataset) -> str:
    arrays = [d.train.images, d.train.labels, d.test.images, d.test.labels]
    if d.validation is not None:
        arrays += [d.validation.images, d.validation.labels]
    return fingerprint_arrays(*arrays, extra=str(d.num_classes))


class ImageTask(Task):
    """A VAE or CVAE on labelled images: the task of `cvae-jax train`."""

    name = "images"
    config_class = Config
    resumable = (*Task.resumable, "model.kernels")

    def __init__(self, config: Config, dataset: data_lib.Dataset, prior=None):
        check_dataset(dataset)
        self._fingerprint = _fingerprint(dataset)  # of the data as given, before a share is held out
        dataset = data_lib.hold_out(dataset, config.data.validation, config.seed)
        self.config, self.dataset, self.prior = config, dataset, prior
        self.train_rows, self.test_rows = _rows(dataset.train), _rows(dataset.test)
        self.validation_rows = _rows(dataset.validation) if dataset.validation is not None else None

    def build(self, total_steps: int) -> Parts:
        return build(
            self.config, self.dataset.image_shape, self.dataset.num_classes, total_steps=total_steps, prior=self.prior
        )

    def init(self, parts: Parts) -> TrainState:
        return init_for(parts, self.config, self.dataset.image_shape, self.dataset.num_classes)

    def fingerprint(self) -> str:
        d = self.dataset
        return fingerprint_arrays(
            d.train.images, d.train.labels, d.test.images, d.test.labels, extra=str(d.num_classes)
        )

    def meta(self) -> dict[str, Any]:
        # No "task" entry: image checkpoints keep the format they had before tasks existed.
        return {
            "image_shape": list(self.dataset.image_shape),
            "num_classes": self.dataset.num_classes,
            "data_name": self.dataset.name,
        }

    def data_description(self) -> str:
        return f"data.source={self.config.data.source!r}, data.path={self.config.data.path!r}"

    def finish(self, workdir: Path, parts: Parts, params) -> None:
        from cvae_jax.apps.pictures import write_pictures

        write_pictures(workdir, parts.model, params, self.config, self.dataset)


@dataclasses.dataclass
class Run:
    """What a run produced: the model, final state, per-epoch history and the data it saw (the
    training split without the examples held out for validation, which are `dataset.validation`)."""

    config: Config
    model: VAE
    state: TrainState
    history: list[dict[str, Any]]
    dataset: data_lib.Dataset


def train_and_evaluate(
    config: Config,
    workdir: str | Path | None = None,
    *,
    dataset: data_lib.Dataset | None = None,
    progress: bool = True,
    prior=None,
) -> Run:
    """Trains `config` on all its devices, evaluating the test ELBO each epoch; with a `workdir`,
    writes metrics, pictures and Orbax checkpoints there, and resumes the run it already holds
    (bit-identical to one that never stopped, for the same device count). SIGTERM/SIGINT save a
    checkpoint and raise `Interrupted`. `prior` (a cvae_jax.priors.Prior module) overrides
    config.model.prior; to `load` the run later, register the prior under config.model.prior."""
    validate(config)
    if dataset is None:
        dataset = data_lib.load(config.data, progress=progress and parallel.is_primary())
    task = ImageTask(config, dataset, prior)
    fitted = fit(task, workdir, progress=progress)
    return Run(
        config=config, model=fitted.parts.model, state=fitted.state, history=fitted.history, dataset=task.dataset
    )


@dataclasses.dataclass
class Loaded:
    """A trained run read back from its checkpoint."""

    model: VAE
    params: Any
    config: Config
    meta: dict[str, Any]
    step: int


def load_run(workdir: str | Path, which: str | int = "latest") -> Loaded:
    """The run in `workdir` at its "latest" or "best" (lowest validation neg. ELBO) checkpoint, or a step."""
    if not checkpoint.check_workdir(workdir).is_dir():
        raise checkpoint.CheckpointError(f"run directory {str(workdir)!r} does not exist")
    with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
        step = ckpts.resolve(which)
        meta = ckpts.read_meta(step)
        if "image_shape" not in meta:
            raise checkpoint.CheckpointError(
                f"{str(workdir)!r} holds a {meta.get('task', 'non-image')} run, not an "
                "image run (for molecules: cvae-jax sample-molecules)"
            )
        config = from_dict(meta["config"])
        image_shape, num_classes = tuple(meta["image_shape"]), int(meta["num_classes"])
        parts = build(config, image_shape, num_classes)
        target = jax.eval_shape(lambda: init_for(parts, config, image_shape, num_classes))
        key = np.asarray(jax.random.key_data(base_key(0)))
        state, _, meta = ckpts.restore(step, target, key)
    return Loaded(model=parts.model, params=evaluation_params(state), config=config, meta=meta, step=step)


def load(workdir: str | Path, which: str | int = "latest") -> tuple[VAE, Any, Config]:
    """(model, params, config) of the run in `workdir`, from its "latest" or "best" checkpoint (or a step)."""
    run = load_run(workdir, which)
    return run.model, run.params, run.config
