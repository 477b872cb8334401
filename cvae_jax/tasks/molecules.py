"""Conditional molecule generation: a SMILES CVAE conditioned on molecular properties (Lim et al. 2018).

    data = molecules.prepare(cfg)                       # SMILES -> tokens; RDKit properties -> condition
    model, state, history = molecules.train(cfg, data)  # a MoleculeTask on the library's one trainer
    smi = molecules.generate(model, state.params, key, data.condition_for({"logp": 3.0}, 1000), data.vocab)
    model, params, data = molecules.load(workdir)       # a run trained with train(..., workdir=...)

The condition is the property vector standardized with the training set's mean and std; ask for
values in the properties' own units through `MoleculeData.condition_for`. Training is the image
runs' trainer (`cvae_jax.training.trainer.fit`): the same step, ELBO, KL schedules and free bits,
devices, checkpoints, exact resume, signals and metrics.jsonl; only the terms
(`cvae_jax.molecules.model.make_terms`) differ.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.apps import inference
from cvae_jax.config import (
    CheckpointConfig,
    ConfigError,
    ParallelConfig,
    TrainConfig,
    validate_parallel,
    validate_train,
)
from cvae_jax.core import objectives
from cvae_jax.data import smiles
from cvae_jax.molecules import chem, grammar
from cvae_jax.molecules import model as sequence
from cvae_jax.training.checkpoint import Checkpoints
from cvae_jax.training.step import base_key, make_optimizer
from cvae_jax.training.tasks import Parts, Task, fingerprint_arrays
from cvae_jax.training.trainer import fit


@dataclasses.dataclass(frozen=True)
class MoleculeConfig:
    train_path: str
    test_path: str
    num_train: int = 50_000  # the first N molecules of each file
    num_test: int = 2_000
    # Validation, for the "best" checkpoint and early stopping: the molecules that follow the first
    # num_train of the training file, up to this many; a file with none left over gives its last
    # min(num_validation, 10%) instead, which training then leaves out. 0 = none (test decides).
    num_validation: int = 1_000
    properties: tuple[str, ...] = ("logp", "tpsa", "mw")  # the condition; () = an unconditional VAE
    representation: str = "smiles"  # the strings the model reads and writes: "smiles", "kekule" or "selfies"
    latent_dim: int = 32
    embed_dim: int = 64
    encoder_hidden: int = 128
    decoder_hidden: int = 256
    decoder_layers: int = 1  # stacked GRUs in the decoder (MOSES's VAE: 3)
    word_dropout: float = 0.0  # share of the decoder's previous tokens hidden during training
    # SMILES only: the decoder also reads the grammar's state at every step (open branches and rings,
    # the current atom's free valence; cvae_jax.molecules.grammar.features)
    grammar_features: bool = False
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            epochs=10, batch_size=256, eval_batch_size=500, kl_schedule="linear", warmup_steps=2000
        )
    )
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)  # train.batch_size is global
    # A checkpoint after every epoch (the last two and the best by validation -ELBO are kept).
    checkpoint: CheckpointConfig = dataclasses.field(
        default_factory=lambda: CheckpointConfig(every_epochs=1, keep=2, async_save=False)
    )
    seed: int = 0

    def __post_init__(self):
        for name in (
            "num_train",
            "num_test",
            "latent_dim",
            "embed_dim",
            "encoder_hidden",
            "decoder_hidden",
            "decoder_layers",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.representation not in smiles.REPRESENTATIONS:
            raise ConfigError(f"representation must be one of {smiles.REPRESENTATIONS}, got {self.representation!r}")
        if self.grammar_features and self.representation == "selfies":
            raise ConfigError("grammar_features reads the SMILES grammar: use representation smiles or kekule")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ConfigError(f"word_dropout must be in [0, 1), got {self.word_dropout}")
        unknown = [p for p in self.properties if p not in chem.PROPERTIES]
        if unknown:
            raise ConfigError(f"properties {unknown} unknown; choose from {sorted(chem.PROPERTIES)}")
        validate_train(self.train)
        validate_parallel(self.parallel)
        if self.train.batch_size > self.num_train:
            raise ConfigError(f"train.batch_size={self.train.batch_size} is larger than num_train={self.num_train}")
        if self.num_validation < 0:
            raise ConfigError(f"num_validation must be >= 0 (0 = no validation molecules), got {self.num_validation}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, c: dict[str, Any]) -> MoleculeConfig:
        """The config of `to_dict()` output (a checkpoint's, possibly without the newer sections). A config
        saved before num_validation existed held nothing out: it is read with num_validation 0."""
        from cvae_jax.config import from_dict

        return from_dict({"num_validation": 0, **c}, cls)


def recipe(
    train_path: str,
    test_path: str,
    *,
    num_train: int = 30_000,
    num_test: int = 2_000,
    epochs: int = 10,
    free_bits: float = 0.1,
    word_dropout: float = 0.0,
    beta: float = 1.0,
    warmup_epochs: float = 2.0,
    seed: int = 0,
    **fields,
) -> MoleculeConfig:
    """The measured setting (experiments/README.md, "Conditional molecule generation"): batch 128, the
    KL weight warmed up linearly from 0 to `beta` over the first `warmup_epochs` epochs, `free_bits`
    nats per latent dimension; `fields` sets any other MoleculeConfig field (properties, latent_dim, ...)."""
    train = TrainConfig(
        epochs=epochs,
        batch_size=128,
        eval_batch_size=500,
        beta=beta,
        kl_schedule="linear",
        warmup_steps=max(1, int(warmup_epochs * (num_train // 128))),
        free_bits=free_bits,
    )
    return MoleculeConfig(
        train_path,
        test_path,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        word_dropout=word_dropout,
        train=train,
        **fields,
    )


@dataclasses.dataclass
class MoleculeData:
    vocab: smiles.Vocab
    length: int  # tokens per row, the EOS included
    names: tuple[str, ...]
    mean: np.ndarray  # the training set's property means, stds and medians (the condition's units)
    std: np.ndarray
    median: np.ndarray
    train: dict[str, np.ndarray]  # {"tokens": int32 [N, length], "condition": float32 [N, P], "properties"}
    test: dict[str, np.ndarray]
    train_smiles: list[str]
    test_smiles: list[str]
    validation: dict[str, np.ndarray] | None = None  # like test; None: no validation molecules
    validation_smiles: list[str] = dataclasses.field(default_factory=list)

    def conditions_like(self, reference: Sequence[str], num: int, seed: int = 0) -> np.ndarray:
        """float32 [num, P]: the standardized properties of `num` molecules drawn (with replacement, seeded)
        from `reference` SMILES that RDKit parses: conditions distributed as real molecules' are."""
        rng = np.random.default_rng(seed)
        picked = [reference[i] for i in rng.integers(0, len(reference), size=num)] if len(reference) else []
        props = chem.properties(picked, self.names) if picked else np.zeros((0, len(self.names)))
        props = props[~np.isnan(props).any(axis=1)]
        if not len(props):
            raise ValueError("none of the reference molecules parse: give SMILES RDKit can read")
        props = props[rng.integers(0, len(props), size=num)] if len(props) < num else props
        return ((props - self.mean) / self.std).astype(np.float32)

    def condition_for(self, values: dict[str, float], num: int) -> np.ndarray:
        """float32 [num, P]: the standardized condition for property `values` (in their own units);
        properties not named are held at the training median."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise ValueError(f"the model is conditioned on {list(self.names)}, not on {sorted(unknown)}")
        row = np.array([values.get(n, self.median[i]) for i, n in enumerate(self.names)])
        return np.tile(((row - self.mean) / self.std).astype(np.float32), (num, 1))


def _texts(smi: list[str], representation: str) -> tuple[list[str], list[str]]:
    """(the SMILES, their strings in `representation`), leaving out molecules that do not translate."""
    if representation == "smiles":
        return smi, smi
    translate = chem.kekule if representation == "kekule" else smiles.to_selfies
    pairs = [(s, t) for s, t in zip(smi, chem.parallel_map(translate, smi)) if t]
    return [s for s, _ in pairs], [t for _, t in pairs]


def _split(smi: list[str], texts: list[str], vocab, length: int, names, mean=None, std=None):
    props = chem.properties(smi, names) if names else np.zeros((len(smi), 0))
    keep = ~np.isnan(props).any(axis=1)
    smi, props = [s for s, k in zip(smi, keep) if k], props[keep]
    texts = [t for t, k in zip(texts, keep) if k]
    if mean is None:
        mean, std = props.mean(0), props.std(0) + 1e-8
    arrays = {
        "tokens": smiles.encode(texts, vocab, length),
        "properties": props.astype(np.float32),
        "condition": ((props - mean) / std).astype(np.float32),
    }
    return smi, arrays, mean, std


def prepare(cfg: MoleculeConfig, cached: bool = True) -> MoleculeData:
    """Loads, tokenizes (in cfg.representation) and labels the data. The vocabulary and length come from
    the training set; test molecules with other tokens or longer strings are left out (`test_smiles`
    lists those kept). Molecules RDKit cannot parse (or SELFIES cannot translate) are left out of both.
    With `cached`, the result is kept in cvae_jax.data.cache (keyed by the files and the settings that
    shape it) and read back next time: MOSES's 1.58M training molecules take minutes to label."""
    if not cached:
        return _prepare(cfg)
    from cvae_jax.data import cache

    paths = [Path(cfg.train_path), Path(cfg.test_path)]
    for path in paths:
        if not path.is_file():
            smiles.load_csv(path)  # raises the clear error of a missing file
    shape = json.dumps([cfg.num_train, cfg.num_test, cfg.representation, list(cfg.properties), 1])
    if cfg.num_validation:  # (entries without validation keep their keys)
        shape = json.dumps(
            [cfg.num_train, cfg.num_test, cfg.num_validation, cfg.representation, list(cfg.properties), 2]
        )
    folder = cache.keyed_dir("molecules", paths, extra=shape)
    if not (folder / "done").exists():
        _write_prepared(folder, _prepare(cfg))
    data = _read_prepared(folder)
    if len(data.train_smiles) < cfg.train.batch_size:
        raise ConfigError(
            f"{cfg.train_path} has {len(data.train_smiles)} usable molecules, fewer than one batch "
            f"({cfg.train.batch_size})"
        )
    return data


def _write_prepared(folder: Path, data: MoleculeData) -> None:
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    splits = ("train", "test") if data.validation is None else ("train", "test", "validation")
    arrays = {f"{split}_{k}": v for split in splits for k, v in getattr(data, split).items()}
    np.savez(folder / "arrays.npz", mean=data.mean, std=data.std, median=data.median, **arrays)
    for split in splits:
        with gzip.open(folder / f"{split}.smi.gz", "wt") as f:
            f.write("\n".join(getattr(data, f"{split}_smiles")))
    meta = {"vocab": list(data.vocab.tokens), "representation": data.vocab.representation}
    (folder / "meta.json").write_text(json.dumps({**meta, "length": data.length, "names": list(data.names)}))
    (folder / "done").write_text("")  # last: marks a complete entry


def _read_prepared(folder: Path) -> MoleculeData:
    import gzip

    meta, saved = json.loads((folder / "meta.json").read_text()), np.load(folder / "arrays.npz")
    names = ("train", "test", "validation") if (folder / "validation.smi.gz").exists() else ("train", "test")
    split = {s: {k[len(s) + 1 :]: saved[k] for k in saved.files if k.startswith(s + "_")} for s in names}
    texts = {}
    for name in names:
        with gzip.open(folder / f"{name}.smi.gz", "rt") as f:
            texts[name] = f.read().split("\n")
    return MoleculeData(
        smiles.Vocab(tuple(meta["vocab"]), meta["representation"]),
        meta["length"],
        tuple(meta["names"]),
        saved["mean"],
        saved["std"],
        saved["median"],
        split["train"],
        split["test"],
        texts["train"],
        texts["test"],
        split.get("validation"),
        texts.get("validation", []),
    )


def _held_out(rows: list[str], cfg: MoleculeConfig) -> tuple[list[str], list[str]]:
    """(training, validation) SMILES of the training file's first num_train + num_validation rows."""
    if len(rows) > cfg.num_train:
        return rows[: cfg.num_train], rows[cfg.num_train :]
    count = min(cfg.num_validation, len(rows) // 10)
    return (rows[:-count], rows[-count:]) if count else (rows, [])


def _fitting(smi: list[str], texts: list[str], vocab, length: int, rep: str) -> tuple[list[str], list[str]]:
    """(SMILES, texts) of the molecules whose tokens are all in `vocab` and that end within `length`."""
    ids = vocab.ids()
    fit = [len(tokens := smiles.tokenize(t, rep)) < length and all(x in ids for x in tokens) for t in texts]
    return [s for s, f in zip(smi, fit) if f], [t for t, f in zip(texts, fit) if f]


def _prepare(cfg: MoleculeConfig) -> MoleculeData:
    rep = cfg.representation
    train_rows, validation_rows = _held_out(smiles.load_csv(cfg.train_path, cfg.num_train + cfg.num_validation), cfg)
    train_smi, train_text = _texts(train_rows, rep)
    test_smi, test_text = _texts(smiles.load_csv(cfg.test_path, cfg.num_test), rep)
    if len(train_smi) < cfg.train.batch_size:
        raise ConfigError(
            f"{cfg.train_path} has {len(train_smi)} molecules, fewer than one batch ({cfg.train.batch_size})"
        )
    vocab = smiles.build_vocab(train_text, rep)
    length = 1 + max(len(smiles.tokenize(t, rep)) for t in train_text)
    fits = _fitting(test_smi, test_text, vocab, length, rep)
    if not fits[0]:
        raise ValueError(f"none of the {len(test_smi)} test molecules fit the training vocabulary and length")
    names = tuple(cfg.properties)
    train_smi, train, mean, std = _split(train_smi, train_text, vocab, length, names)
    test_smi, test, _, _ = _split(*fits, vocab, length, names, mean, std)
    median = np.median(train["properties"], axis=0) if names else np.zeros(0)
    validation, validation_smi = None, []
    held = _fitting(*_texts(validation_rows, rep), vocab, length, rep)
    if held[0]:
        validation_smi, validation, _, _ = _split(*held, vocab, length, names, mean, std)
    return MoleculeData(
        vocab, length, names, mean, std, median, train, test, train_smi, test_smi, validation, validation_smi
    )


def build_model(cfg: MoleculeConfig, data: MoleculeData, prior=None) -> sequence.SmilesVAE:
    return sequence.build(
        data.vocab.size,
        data.length,
        latent_dim=cfg.latent_dim,
        condition_dim=len(data.names),
        embed_dim=cfg.embed_dim,
        encoder_hidden=cfg.encoder_hidden,
        decoder_hidden=cfg.decoder_hidden,
        decoder_layers=cfg.decoder_layers,
        word_dropout=cfg.word_dropout,
        prior=prior,
        grammar_table=grammar.syntax(data.vocab) if cfg.grammar_features else None,
    )


def _rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"tokens": arrays["tokens"], "condition": arrays["condition"]}


def _conditioning(cfg: MoleculeConfig, data: MoleculeData) -> dict:
    """What a saved model needs besides its weights: the config, vocabulary and condition units."""
    return {
        "config": cfg.to_dict(),
        "vocab": list(data.vocab.tokens),
        "length": data.length,
        "names": list(data.names),
        "mean": data.mean.tolist(),
        "std": data.std.tolist(),
        "median": data.median.tolist(),
    }


class MoleculeTask(Task):
    """The SMILES (C)VAE as a task: rows {"tokens", "condition"}, the sequence ELBO with word dropout."""

    name = "molecules"

    def __init__(self, cfg: MoleculeConfig, data: MoleculeData, prior=None):
        self.config, self.data, self.prior = cfg, data, prior
        self.train_rows, self.test_rows = _rows(data.train), _rows(data.test)
        if data.validation is not None and len(data.validation["tokens"]):
            self.validation_rows = _rows(data.validation)

    def build(self, total_steps: int) -> Parts:
        tc, model = self.config.train, build_model(self.config, self.data, self.prior)
        loss = objectives.make_elbo_loss(sequence.make_terms(model, training=True), cfg=tc, total_steps=total_steps)
        return Parts(model=model, terms=sequence.make_terms(model), loss=loss, tx=make_optimizer(tc))

    def example(self) -> dict[str, np.ndarray]:
        # From the vocabulary's row length and the properties, not the rows (a loaded model has none).
        return {
            "tokens": np.zeros((2, self.data.length), np.int32),
            "condition": np.zeros((2, len(self.data.names)), np.float32),
        }

    def model_inputs(self, batch):
        return batch["tokens"], (batch["condition"] if self.data.names else None)

    def fingerprint(self) -> str:
        held = () if self.validation_rows is None else self.validation_rows.values()
        return fingerprint_arrays(
            *self.train_rows.values(),
            *self.test_rows.values(),
            *held,
            extra=json.dumps(list(self.data.vocab.tokens)),
        )

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "molecules": _conditioning(self.config, self.data)}

    def data_description(self) -> str:
        return f"train_path={self.config.train_path!r}, test_path={self.config.test_path!r}"

    def config_from_dict(self, saved: dict[str, Any]) -> MoleculeConfig:
        return MoleculeConfig.from_dict(saved)


def train(
    cfg: MoleculeConfig, data: MoleculeData, *, prior=None, workdir: str | Path | None = None, progress: bool = False
):
    """Trains from the seed: (model, state, history), history being the metrics.jsonl entries (a
    "train" and a "test" line per epoch, epoch 0 = untrained; -ELBO, recon and KL in nats per molecule).

    With `workdir`, an Orbax checkpoint is written after every epoch, and a workdir that holds a run
    of the same config and data resumes it: the same numbers as a run that never stopped (a
    finished run returns at once). A larger train.epochs trains a finished run on; other settings
    that differ are refused, by name. Devices, hosts, signals and the NaN policy are the trainer's."""
    fitted = fit(MoleculeTask(cfg, data, prior), workdir, progress=progress)
    return fitted.parts.model, fitted.state, fitted.history


def load(workdir: str | Path, which: str | int = "best", prior=None):
    """(model, params, data) of a saved molecule run; `data` carries the vocabulary and condition units
    (its train and test sets are empty). which: "best" (by validation -ELBO; refused for a run without
    validation molecules), "latest" or a step."""
    with Checkpoints(workdir, read_only=True) as ckpts:
        if ckpts.read_meta(ckpts.resolve("latest")).get("molecules") is None:
            raise ConfigError(f"{workdir} holds no molecule run (cvae_jax.molecules.train writes one)")
        step = ckpts.resolve(which)
        saved = ckpts.read_meta(step).get("molecules")
        cfg = MoleculeConfig.from_dict(saved["config"])
        empty = {
            "tokens": np.zeros((0, saved["length"]), np.int32),
            "condition": np.zeros((0, len(saved["names"])), np.float32),
        }
        data = MoleculeData(
            smiles.Vocab(tuple(saved["vocab"]), cfg.representation),
            saved["length"],
            tuple(saved["names"]),
            *(np.asarray(saved[k]) for k in ("mean", "std", "median")),
            empty,
            empty,
            [],
            [],
        )
        task = MoleculeTask(cfg, data, prior)
        parts = task.build(1)
        target = jax.eval_shape(lambda: task.init(parts))
        state, _, _ = ckpts.restore(step, target, jax.random.key_data(base_key(cfg.seed)))
    return parts.model, state.params, data


@inference.compiled_per_model(5, 7)
def _generate_tokens(model, params, z, condition, key, temperature: float, syntax=None, guidance: float = 0.0):
    """Token rows [N, L] from latents z; compiled once per model, temperature, guidance and shape."""
    return model.apply(params, z, condition, key, temperature, syntax, guidance, method=model.generate)


def generate(
    model,
    params,
    key,
    condition: np.ndarray | None,
    vocab: smiles.Vocab,
    num: int | None = None,
    temperature: float = 1.0,
    constrained: bool = False,
    guidance: float = 0.0,
    batch: int | None = None,
) -> list[str]:
    """SMILES drawn from p(x | z, c), z ~ p(z | c): one per condition row (or `num`, unconditional).
    `batch`: at most that many rows per compiled call (bounded memory whatever the count), the rows
    from `start` on drawn with key fold_in(key, start).
    `constrained`: SMILES-syntax-constrained sampling (`cvae_jax.molecules.grammar`): every string
    is grammatical SMILES within the atoms' valences, though RDKit may still refuse an aromatic ring
    (the "kekule" representation has none) or a rare row the valences cornered; no effect
    on SELFIES. `guidance` w >= 0: each step's logits l(c) + w (l(c) - l(mean properties)), see
    `cvae_jax.molecules.model.SmilesDecoder.generate`; no effect on an unconditional model."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not guidance >= 0:
        raise ValueError(f"guidance must be >= 0 (0 = none), got {guidance}")
    if condition is not None:
        condition = jnp.asarray(condition, jnp.float32)
        num = condition.shape[0]
    if not num or num < 1:
        raise ValueError(f"the number of molecules to draw must be a positive integer, got {num}")
    if batch is not None:
        kwargs = dict(temperature=temperature, constrained=constrained, guidance=guidance)
        return [
            smi
            for start in range(0, num, batch)
            for smi in generate(
                model,
                params,
                jax.random.fold_in(key, start),
                None if condition is None else condition[start : start + batch],
                vocab,
                min(batch, num - start),
                **kwargs,
            )
        ]
    z = model.apply(params, jax.random.fold_in(key, 0), num, condition, method=model.prior_sample)
    syntax = grammar.syntax(vocab) if constrained else None
    tokens = _generate_tokens(
        model, params, z, condition, jax.random.fold_in(key, 1), float(temperature), syntax, float(guidance)
    )
    return smiles.decode(np.asarray(tokens), vocab)


def reconstruction(model, params, arrays: dict[str, np.ndarray], vocab: smiles.Vocab) -> dict[str, float]:
    """Greedy decoding of each molecule's posterior mean: the share decoded exactly, and per token."""
    condition = jnp.asarray(arrays["condition"]) if model.conditional else None
    mean, _ = model.apply(params, jnp.asarray(arrays["tokens"]), condition, method=model.encode)
    out = np.asarray(_generate_tokens(model, params, mean, condition, jax.random.key(0), 0.0, None, 0.0))
    tokens = arrays["tokens"]
    scored = tokens != smiles.PAD
    exact = [a == b for a, b in zip(smiles.decode(out, vocab), smiles.decode(tokens, vocab))]
    return {"exact": float(np.mean(exact)), "token_accuracy": float(np.sum((out == tokens) & scored) / np.sum(scored))}


def property_control(
    model,
    params,
    data: MoleculeData,
    key,
    name: str,
    targets: Sequence[float],
    num: int = 500,
    temperature: float = 1.0,
) -> list[dict]:
    """For each target value of property `name` (others at the training median): `num` molecules
    drawn under that condition, their validity, and the property measured by RDKit on the valid ones."""
    col = data.names.index(name)
    rows = []
    for i, target in enumerate(targets):
        smi = generate(
            model,
            params,
            jax.random.fold_in(key, i),
            data.condition_for({name: target}, num),
            data.vocab,
            temperature=temperature,
        )
        values = chem.properties(smi, data.names)[:, col]
        valid = values[~np.isnan(values)]
        rows.append(
            {
                "property": name,
                "target": float(target),
                "validity": float(len(valid) / num),
                "mean": float(np.mean(valid)) if len(valid) else float("nan"),
                "std": float(np.std(valid)) if len(valid) else float("nan"),
                "mae": float(np.mean(np.abs(valid - target))) if len(valid) else float("nan"),
            }
        )
    return rows
