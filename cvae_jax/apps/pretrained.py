"""Trained models as self-contained folders, and loading one in one line.

    cvae-jax export --workdir runs/quickstart --out models/digits-cvae    # or export(workdir, out)
    model = cvae_jax.from_pretrained("models/digits-cvae")                 # or a shipped name
    images = inference.sample(model.model, model.params, key, 16, condition)

A model folder holds:

* `params.safetensors`: the weights, float32, one tensor per parameter named by its path in the
  parameter tree ("params/encoder/mean/kernel"); the evaluation parameters (the moving average where
  the run kept one);
* `config.json`: the run's config; `meta.json`: the task, the checkpoint step and what loading needs
  (image shape and classes, or the molecule vocabulary and condition units), and the metrics at that
  step; `provenance.jsonl`: the commands that trained it;
* `README.md`: the model card, written from all of the above.

Shipped models (`NAMES`) live in the package (`cvae_jax/pretrained/<name>/`); with the `[hub]` extra a
folder is shared through the Hugging Face Hub (`push_to_hub`, `from_pretrained("org/name")`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

FORMAT = "cvae_jax-pretrained"
VERSION = 1
FILES = ("params.safetensors", "config.json", "meta.json", "README.md")
SHIPPED = Path(__file__).resolve().parent.parent / "pretrained"


@dataclasses.dataclass
class Pretrained:
    """A loaded model folder: `model` and `params` for inference; `config`; `meta`; for molecules,
    `data` (the vocabulary and condition units that `cvae_jax.molecules.generate` takes)."""

    task: str
    model: Any
    params: Any
    config: Any
    meta: dict[str, Any]
    data: Any = None
    folder: Path | None = None


def names() -> list[str]:
    """The models shipped in the package."""
    return sorted(p.name for p in SHIPPED.iterdir() if (p / "meta.json").exists()) if SHIPPED.is_dir() else []


# --------------------------------------------------------------------------------------------- export


def _flat(params) -> dict[str, np.ndarray]:
    """float32 arrays named by their path in the parameter tree ("params/encoder/mean/kernel")."""
    return {k: np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def _unflat(flat: dict[str, np.ndarray]) -> dict:
    return traverse_util.unflatten_dict({k: jax.numpy.asarray(v) for k, v in flat.items()}, sep="/")


def _metrics_at(workdir: Path, step: int) -> dict[str, dict]:
    """The validation and test lines of metrics.jsonl at `step`."""
    out = {}
    path = workdir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        if entry.get("step") == step and entry.get("split") in ("validation", "test"):
            out[entry["split"]] = {k: v for k, v in entry.items() if k not in ("split", "step")}
    return out


# Parts of an experiment's results that a model card leaves out: timings, settings, long lists.
_NOT_MEASURES = ("seconds", "config", "control", "guidance_sweep", "examples", "per_class", "workdir", "data")


def measured(results: str | Path, seed: int) -> dict[str, Any]:
    """What a model card quotes from an experiment's results file (written by code, with its provenance):
    the numbers of the seed's entry (`by_seed`), flattened to "a.b" names, and the file's command."""
    data = json.loads(Path(results).read_text())
    entry = data.get("by_seed", {}).get(str(seed), data)
    values: dict[str, float] = {}

    def walk(node, prefix: str, depth: int) -> None:
        for key, value in node.items():
            if any(word in key for word in _NOT_MEASURES):
                continue
            if isinstance(value, dict) and depth < 2:
                walk(value, f"{prefix}{key}.", depth + 1)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                values[f"{prefix}{key}"] = value

    walk(entry, "", 0)
    provenance = data.get("provenance") or {}
    return {"file": Path(results).name, "seed": seed, "command": provenance.get("command"), "values": values}


def export(
    workdir: str | Path,
    out: str | Path,
    which: str | int = "best",
    name: str | None = None,
    results: str | Path | None = None,
    task_class=None,
) -> Path:
    """Writes the model folder of the run in `workdir` at checkpoint `which` ("best" when the run has
    validation data, else "latest"; or a step) to `out` (a new or empty folder). `results`: an
    experiment's results file that measured this run, whose numbers for the run's seed the card quotes.
    `task_class`: the Task class of a run of your own task (registered names are found by name)."""
    from cvae_jax.training import checkpoint

    workdir, out = Path(workdir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: export into a new folder")
    with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
        if which == "best":
            try:
                step = ckpts.resolve("best")
            except checkpoint.CheckpointError:
                which, step = "latest", ckpts.resolve("latest")
        else:
            step = ckpts.resolve(which)
        saved = ckpts.read_meta(step)
    task = saved.get("task") or "images"
    if task == "images":
        from cvae_jax.tasks.images import load_run

        run = load_run(workdir, step)
        params, config = run.params, run.config.to_dict()
        task_meta = {"image_shape": list(saved["image_shape"]), "num_classes": int(saved["num_classes"])}
        task_meta["check"] = _image_check(run.model, params, task_meta["num_classes"])
    elif task == "molecules":
        from cvae_jax.tasks import molecules

        model, params, data = molecules.load(workdir, step)
        from cvae_jax.molecules import grammar

        conditioning = {**saved["molecules"], "config": _portable_molecule_config(saved["molecules"]["config"])}
        conditioning["capacities"] = grammar.atom_capacities(data.vocab)  # so that loading needs no RDKit
        config, task_meta = conditioning["config"], {"molecules": conditioning}
        task_meta["check"] = molecule_check(model, params, data)
    else:  # any other task: rebuilt from its config by its class (registered name, or given)
        cls = task_class or _task_class(task, workdir)
        task_obj = cls.from_config(cls.read_config(saved["config"]))
        params, config, task_meta = _restore_task(task_obj, workdir, step), task_obj.config.to_dict(), {}
        task_meta["task_class"] = f"{cls.__module__}:{cls.__qualname__}"
    from safetensors.numpy import save_file

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_flat(params), str(tmp / "params.safetensors"))
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    from cvae_jax import provenance

    meta = {"format": FORMAT, "version": VERSION, "task": task, "step": step, "checkpoint": str(which)}
    meta["exported_by"] = provenance.stamp()  # the commit, command and host of this export
    meta.update(name=name or out.name, metrics=_metrics_at(workdir, step), **task_meta)
    if results is not None:
        meta["measured"] = measured(results, int(config.get("seed", 0)))
    (tmp / "meta.json").write_text(provenance.portable(json.dumps(meta, indent=2)) + "\n")
    if (workdir / "provenance.jsonl").exists():
        shutil.copy(workdir / "provenance.jsonl", tmp / "provenance.jsonl")
    from cvae_jax.apps import model_card

    (tmp / "README.md").write_text(model_card.card(meta, config, _starts(tmp)))
    if out.exists():
        out.rmdir()
    tmp.rename(out)  # the folder appears whole or not at all
    return out


def _task_class(name: str, where):
    from cvae_jax import tasks

    try:
        return tasks.resolve(name)
    except Exception:  # noqa: BLE001 - any failure to find it gets the same advice
        raise ValueError(
            f"{where} holds a run of task {name!r}, which is not registered by name: pass its class "
            "(export(..., task_class=Class), from_pretrained(..., task_class=Class))"
        ) from None


def _restore_task(task, workdir: Path, step: int):
    """The evaluation parameters of `task`'s run in `workdir` at `step`."""
    from cvae_jax.training import checkpoint
    from cvae_jax.training.step import base_key, evaluation_params

    parts = task.build(1)
    target = jax.eval_shape(lambda: task.init(parts))
    with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
        state, _, _ = ckpts.restore(step, target, np.asarray(jax.random.key_data(base_key(0))))
    return evaluation_params(state)


def _portable_molecule_config(config: dict) -> dict:
    """The molecule config in the current sectioned layout, MOSES's files (from the molsets wheel) named
    "" (which means them) and other paths made relative: no path of the exporting machine."""
    from cvae_jax import provenance
    from cvae_jax.molecules.config import MoleculeConfig

    cfg = MoleculeConfig.from_dict(config).to_dict()
    for key, split in (("train_path", "train"), ("test_path", "test")):
        path = Path(cfg["data"][key])
        if path.name == f"{split}.csv.gz" and "moses" in path.parts:
            cfg["data"][key] = ""
    return json.loads(provenance.portable(json.dumps(cfg)))


# What a loaded folder must reproduce (a test does): the exported run's samples from a fixed key, or for
# molecules, the -ELBO under its weights of token rows the run drew at export from a fixed key.
CHECK_SEED, CHECK_NUM = 0, 8


def _image_check(model, params, num_classes: int) -> dict:
    from cvae_jax.apps import inference

    labels = np.arange(CHECK_NUM) % num_classes
    condition = inference.condition_for(model, labels if model.conditional else None, num_classes, CHECK_NUM)
    drawn = np.asarray(inference.sample(model, params, jax.random.key(CHECK_SEED), CHECK_NUM, condition))
    return {
        "seed": CHECK_SEED,
        "labels": labels.tolist(),
        "sample_means": drawn.reshape(CHECK_NUM, -1).mean(1).tolist(),
    }


def molecule_check(model, params, data, tokens: np.ndarray | None = None) -> dict:
    """Token rows drawn from a fixed key (the median condition), their SMILES and -ELBO (`tokens`: score
    these rows instead of drawing)."""
    from cvae_jax.data import smiles
    from cvae_jax.molecules import generation
    from cvae_jax.molecules import model as sequence

    key = jax.random.key(CHECK_SEED)
    condition = data.condition_for({}, CHECK_NUM) if model.conditional else None
    if tokens is None:
        z = model.apply(params, jax.random.fold_in(key, 0), CHECK_NUM, condition, method=model.prior_sample)
        tokens = np.asarray(generation._generate_tokens(model, params, z, condition, jax.random.fold_in(key, 1), 1.0))
    rows = {"tokens": np.asarray(tokens, np.int32)}
    rows["condition"] = np.asarray(condition) if condition is not None else np.zeros((CHECK_NUM, 0), np.float32)
    terms = sequence.make_terms(model)(params, rows, key)
    return {
        "seed": CHECK_SEED,
        "tokens": rows["tokens"].tolist(),
        "smiles": smiles.decode(rows["tokens"], data.vocab),
        "neg_elbo": np.asarray(terms["neg_elbo"]).tolist(),
    }


def _starts(folder: Path) -> list[dict]:
    path = folder / "provenance.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ----------------------------------------------------------------------------------------------- load


def resolve(name_or_dir: str | Path) -> Path:
    """The folder of a shipped name, a local folder, or (with the [hub] extra) a Hub repository id."""
    text = str(name_or_dir)
    if text in names():
        return SHIPPED / text
    path = Path(text)
    if path.is_dir():
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"{path} is not a model folder (no meta.json): make one with cvae-jax export")
        return path
    if text.count("/") == 1 and not path.exists():
        from cvae_jax.apps import hub

        return hub.download(text)
    raise FileNotFoundError(
        f"no pretrained model {text!r}: give a shipped name ({', '.join(names()) or 'none installed'}), a folder "
        "written by cvae-jax export, or a Hugging Face Hub id org/name (pip install -e '.[hub]')"
    )


def from_pretrained(name_or_dir: str | Path, task_class=None) -> Pretrained:
    """The model of a shipped name, an exported folder or a Hub id, with its parameters and config.
    `task_class`: the Task class of a model of your own task (registered names are found by name)."""
    from safetensors.numpy import load_file

    folder = resolve(name_or_dir)
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise ValueError(f"{folder} is not a model folder this version of cvae_jax reads ({meta.get('format')})")
    config = json.loads((folder / "config.json").read_text())
    params = _unflat(load_file(str(folder / "params.safetensors")))
    if meta["task"] == "images":
        from cvae_jax.config import from_dict
        from cvae_jax.tasks.images import build, init_for

        cfg = from_dict(config)
        shape, classes = tuple(meta["image_shape"]), int(meta["num_classes"])
        parts = build(cfg, shape, classes)
        _check_shapes(params, jax.eval_shape(lambda: init_for(parts, cfg, shape, classes).params), folder)
        return Pretrained("images", parts.model, params, cfg, meta, folder=folder)
    if meta["task"] == "molecules":
        from cvae_jax.molecules import grammar
        from cvae_jax.tasks import molecules

        grammar.KNOWN_CAPACITY.update(meta["molecules"].get("capacities", {}))
        cfg, data = molecules.conditioning_data(meta["molecules"])
        task = molecules.MoleculeTask(cfg, data)
        parts = task.build(1)
        _check_shapes(params, jax.eval_shape(lambda: task.init(parts).params), folder)
        return Pretrained("molecules", parts.model, params, cfg, meta, data=data, folder=folder)
    from cvae_jax import tasks as registered

    name = meta["task"] if meta["task"] in registered.TASKS else meta.get("task_class", meta["task"])
    cls = task_class or _task_class(name, folder)
    cfg = cls.read_config(config)
    task = cls.from_config(cfg)
    parts = task.build(1)
    _check_shapes(params, jax.eval_shape(lambda: task.init(parts).params), folder)
    return Pretrained(meta["task"], parts.model, params, cfg, meta, folder=folder)


def _check_shapes(params, expected, folder: Path) -> None:
    got = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
    want = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(expected, sep="/").items()}
    if got != want:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ValueError(
            f"{folder}'s weights do not fit its config's model (missing {missing[:3]}, unexpected {extra[:3]}, "
            "or other shapes): the folder is damaged or from another version"
        )
