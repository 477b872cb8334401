"""Experiment trackers behind metrics.jsonl: every line the trainer records also goes to each tracker
named in `train.trackers`, as "<split>/<name>" at the line's step. metrics.jsonl stays the record.

* "tensorboard": event files in the run directory (also on with `train.tensorboard=true`, the default);
* "mlflow": an MLflow run (the `[mlflow]` extra), in `MLFLOW_TRACKING_URI` or else a local file store
  `<workdir>/mlruns` (MLflow keeps file stores behind MLFLOW_ALLOW_FILE_STORE, which is then set);
  the run's config as its parameters;
* "wandb": a Weights & Biases run (the `[wandb]` extra), offline unless `WANDB_MODE` says otherwise,
  its files under `<workdir>/wandb`.

A resumed run continues the same tracker run (its id is kept in `<workdir>/trackers.json`). Trackers
write from process 0 only and need a workdir. A tracker of your own is a class with `log(entry)` and
`close()`, registered with `register(name)` as a factory `(workdir, config_dict) -> tracker`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from cvae_jax.core.registry import Registry

SKIP = ("epoch", "step", "split")

REGISTRY: Registry[Callable] = Registry("tracker", "train.trackers", "cvae_jax.training.trackers")
register = REGISTRY.register


def scalars(entry: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics.jsonl line, named "<split>/<name>"."""
    split = entry.get("split", "run")
    return {
        f"{split}/{name}": float(value)
        for name, value in entry.items()
        if name not in SKIP and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _ids(workdir: Path) -> dict[str, str]:
    path = workdir / "trackers.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _keep_id(workdir: Path, name: str, run_id: str) -> None:
    ids = {**_ids(workdir), name: run_id}
    (workdir / "trackers.json").write_text(json.dumps(ids, indent=2) + "\n")


def _flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


@register("tensorboard")
class TensorBoard:
    def __init__(self, workdir: Path, config: dict):
        del config
        from cvae_jax.training.tensorboard import summary_writer

        self.writer = summary_writer(workdir, flush_secs=30)

    def log(self, entry: dict[str, Any]) -> None:
        if "step" in entry:
            for name, value in scalars(entry).items():
                self.writer.add_scalar(name, value, int(entry["step"]))

    def close(self) -> None:
        self.writer.close()


@register("mlflow")
class MLflow:
    def __init__(self, workdir: Path, config: dict):
        try:
            import mlflow
        except ImportError:
            raise ImportError("train.trackers=mlflow needs the [mlflow] extra: pip install -e '.[mlflow]'") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # the local file store beside the run, which MLflow keeps behind this switch
            uri = (workdir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        run_id = _ids(workdir).get("mlflow")
        if run_id is None:
            name = workdir.resolve().name
            found = self.client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.client.create_experiment(name)
            run_id = self.client.create_run(experiment, run_name=name).info.run_id
            for key, value in list(_flat_config(config).items()):
                self.client.log_param(run_id, key, str(value)[:500])
            _keep_id(workdir, "mlflow", run_id)
        self.run_id, self.uri = run_id, uri

    def log(self, entry: dict[str, Any]) -> None:
        if "step" in entry:
            for name, value in scalars(entry).items():
                self.client.log_metric(self.run_id, name, value, step=int(entry["step"]))

    def close(self) -> None:
        pass  # each metric is written as it is logged; the run stays open to resume


@register("wandb")
class WandB:
    def __init__(self, workdir: Path, config: dict):
        try:
            import wandb
        except ImportError:
            raise ImportError("train.trackers=wandb needs the [wandb] extra: pip install -e '.[wandb]'") from None
        import secrets

        run_id = _ids(workdir).get("wandb") or secrets.token_hex(4)
        _keep_id(workdir, "wandb", run_id)
        self.run = wandb.init(
            dir=str(workdir),
            id=run_id,
            resume="allow",
            mode=os.environ.get("WANDB_MODE", "offline"),
            project=os.environ.get("WANDB_PROJECT", "cvae_jax"),
            name=workdir.resolve().name,
            config=config,
            reinit="create_new",
        )

    def log(self, entry: dict[str, Any]) -> None:
        if "step" in entry:
            self.run.log(scalars(entry), step=int(entry["step"]))

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """The run's trackers: `log(entry)` sends a metrics.jsonl line to each; a no-op without a workdir
    (or outside process 0)."""

    def __init__(self, names: list[str], workdir: Path | None, config: dict):
        self.active = []
        if workdir is None:
            return
        for name in dict.fromkeys(names):
            try:
                factory = REGISTRY.get(name)
            except ValueError as e:
                from cvae_jax.config import ConfigError

                raise ConfigError(str(e)) from None
            self.active.append(factory(Path(workdir), config))

    def log(self, entry: dict[str, Any]) -> None:
        for tracker in self.active:
            tracker.log(entry)

    def close(self) -> None:
        for tracker in self.active:
            tracker.close()
