"""The model card (README.md) of an exported model folder, written from the run: what it is, the data
and their provenance, how it was trained (commands, commit, seed), its validation and test metrics at
the exported checkpoint, how to load it, and its intended use and limits."""

from __future__ import annotations

import json
from typing import Any

USES = {
    "images": (
        "Research and teaching on (conditional) VAEs: sampling, reconstruction, latent-space study, "
        "translation between labels, anomaly scores, and as a baseline to compare against.",
        "It models the data it was trained on and nothing else; its samples are blurry averages of "
        "that data, not photographs of anything. Scores such as the ELBO are in nats per example on "
        "that data and mean nothing on other data.",
    ),
    "molecules": (
        "Research on conditional molecule generation: drawing SMILES whose computed properties "
        "follow a request, as a baseline to compare against.",
        "Its molecules are proposals from a small model trained on a CPU budget: they are not "
        "checked for synthesizability, safety or activity, and on MOSES's metrics the model is below "
        "the published MOSES baselines (experiments/README.md says by how much). Not for any "
        "decision about real compounds.",
    ),
}


OTHER_USE = (
    "Research with the task it was trained on (see its config.json and the code of its task class).",
    "It models its training data and nothing else; read its metrics on that data only.",
)


def _data(meta: dict, config: dict) -> list[str]:
    if meta["task"] not in ("images", "molecules"):
        return [f"- The data of task `{meta['task']}` (`{meta.get('task_class', meta['task'])}`), as its config says."]
    if meta["task"] == "molecules":
        d = config.get("data", config)
        return [
            f"- Molecules: the first {d.get('num_train'):,} of `{d.get('train_path') or 'MOSES train'}` for training, "
            f"the next {d.get('num_validation', 0):,} for validation, the first {d.get('num_test'):,} of "
            f"`{d.get('test_path') or 'MOSES test'}` for testing (MOSES, Polykovskiy et al. 2020; the molsets wheel).",
            f"- Written as {d.get('representation')} strings; conditioned on "
            f"{', '.join(d.get('properties', [])) or 'nothing'} (RDKit), standardized with the training set's mean "
            "and std.",
        ]
    d = config["data"]
    where = {"embedded": "the digits embedded in the package (MNIST, 5,000 images)", "tfds": f"TFDS `{d['name']}`"}
    source = where.get(d["source"], f"`{d['path']}` ({d['source']})")
    held = (
        f"{d['validation']:.0%} of the training images held out for validation"
        if d["validation"]
        else "no validation split"
    )
    shape = "x".join(str(s) for s in meta["image_shape"])
    return [f"- {source}, images {shape}, {meta['num_classes']} classes; {held}."]


def _model(meta: dict, config: dict) -> str:
    if meta["task"] not in ("images", "molecules"):
        return f"a model of the task `{meta.get('task_class', meta['task'])}`"
    if meta["task"] == "molecules":
        m = config.get("model", config)
        grammar = ", reading the grammar state" if m.get("grammar_features") else ""
        return (
            f"a SMILES CVAE (GRU encoder and decoder): latent {m.get('latent_dim')}, decoder "
            f"{m.get('decoder_layers')} x {m.get('decoder_hidden')} units{grammar}"
        )
    m, t = config["model"], config["train"]
    return (
        f"a {m['kind'].upper()} ({m['architecture']}), latent {m['latent_dim']}, {m['likelihood']} likelihood, "
        f"prior {m['prior']}, posterior {m['posterior']}, objective {t['objective']}"
    )


def card(meta: dict, config: dict, starts: list[dict[str, Any]]) -> str:
    """The Markdown model card."""
    from cvae_jax import __version__

    name, task = meta["name"], meta["task"]
    use, limits = USES.get(task, OTHER_USE)
    lines = [
        f"# {name}",
        "",
        f"A cvae_jax {task} model: {_model(meta, config)}. Written by `cvae-jax export` (cvae_jax {__version__}) "
        f"from checkpoint step {meta['step']} ({meta['checkpoint']}).",
        "",
        "## Load it",
        "",
        "```python",
        "import cvae_jax",
        "",
        f'm = cvae_jax.from_pretrained("{name}")  # m.model, m.params, m.config'
        + (", m.data" if task == "molecules" else ""),
        "```",
        "",
        "```bash",
        {
            "images": f"cvae-jax sample --pretrained {name} --num 16 --out samples.npy",
            "molecules": f"cvae-jax sample-molecules --pretrained {name} --num 100 --property logp=3 --out m.smi",
        }.get(task, f"# from Python: cvae_jax.from_pretrained({name!r}, task_class=YourTask)"),
        "```",
        "",
        "## Data",
        "",
        *_data(meta, config),
        "",
        "## Training",
        "",
        f"- Seed {config.get('seed', 0)}, {config['train']['epochs']} epochs, batch {config['train']['batch_size']}, "
        f"{config['train']['optimizer']} at {config['train']['learning_rate']:g}; the full config is `config.json`.",
    ]
    for start in starts[:3]:
        resumed = f", resuming step {start['resumed_from_step']}" if start.get("resumed_from_step") is not None else ""
        lines.append(f"- `{start.get('command')}` at commit {start.get('commit')} on {start.get('host')}{resumed}")
    if not starts:
        lines.append(
            "- The run directory kept no record of its commands (trained before cvae_jax wrote provenance.jsonl)."
        )
    lines += ["", "## Metrics at this checkpoint (nats per example unless named)", ""]
    metrics = meta.get("metrics", {})
    names = sorted({k for split in metrics.values() for k in split if k != "epoch"})
    if metrics:
        lines += ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for split in ("validation", "test"):
            if split in metrics:
                row = metrics[split]
                lines.append(f"| {split} | " + " | ".join(_cell(row.get(k)) for k in names) + " |")
        lines.append("")
        chosen = (
            "Validation chose this checkpoint (the lowest validation -ELBO)"
            if meta["checkpoint"] == "best"
            else f"The run's {meta['checkpoint']} checkpoint"
        )
        lines.append(f"{chosen}; the test split is only reported.")
    else:
        lines.append("No metrics were logged at this step.")
    if meta.get("measured"):
        found = meta["measured"]
        lines += ["", f"## Measured (experiments/results/{found['file']}, seed {found['seed']})", ""]
        if found.get("command"):
            lines += [f"By `{found['command']}`; every number below is that file's.", ""]
        lines += ["| measure | value |", "|---|---|"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in found["values"].items()]
    lines += ["", "## Intended use", "", use, "", "## Limits", "", limits, ""]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
