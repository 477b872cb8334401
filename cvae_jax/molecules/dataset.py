"""The molecule task's data: SMILES files -> tokens in the chosen representation, RDKit properties ->
the condition, with a validation split and a cache (MOSES's 1.58M training molecules take minutes to
label). `prepare(cfg)` returns a `MoleculeData`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from cvae_jax.config import ConfigError
from cvae_jax.data import smiles
from cvae_jax.molecules import chem
from cvae_jax.molecules.config import MoleculeConfig


def paths(cfg: MoleculeConfig) -> tuple[Path, Path]:
    """(training CSV, test CSV): data.train_path and data.test_path, MOSES's splits where they are ""."""
    return tuple(
        Path(path) if path else smiles.moses_csv(split)
        for path, split in ((cfg.data.train_path, "train"), (cfg.data.test_path, "test"))
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
    """Loads, tokenizes (in data.representation) and labels the data. The vocabulary and length come
    from the training set; test molecules with other tokens or longer strings are left out (`test_smiles`
    lists those kept). Molecules RDKit cannot parse (or SELFIES cannot translate) are left out of both.
    With `cached`, the result is kept in cvae_jax.data.cache (keyed by the files and the settings that
    shape it) and read back next time: MOSES's 1.58M training molecules take minutes to label."""
    if not cached:
        return _prepare(cfg)
    from cvae_jax.data import cache

    files, d = paths(cfg), cfg.data
    for path in files:
        if not path.is_file():
            smiles.load_csv(path)  # raises the clear error of a missing file
    shape = json.dumps([d.num_train, d.num_test, d.representation, list(d.properties), 1])
    if d.num_validation:  # (entries without validation keep their keys)
        shape = json.dumps([d.num_train, d.num_test, d.num_validation, d.representation, list(d.properties), 2])
    folder = cache.keyed_dir("molecules", list(files), extra=shape)
    if not (folder / "done").exists():
        _write_prepared(folder, _prepare(cfg))
    data = _read_prepared(folder)
    if len(data.train_smiles) < cfg.train.batch_size:
        raise ConfigError(
            f"{files[0]} has {len(data.train_smiles)} usable molecules, fewer than one batch ({cfg.train.batch_size})"
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
    if len(rows) > cfg.data.num_train:
        return rows[: cfg.data.num_train], rows[cfg.data.num_train :]
    count = min(cfg.data.num_validation, len(rows) // 10)
    return (rows[:-count], rows[-count:]) if count else (rows, [])


def _fitting(smi: list[str], texts: list[str], vocab, length: int, rep: str) -> tuple[list[str], list[str]]:
    """(SMILES, texts) of the molecules whose tokens are all in `vocab` and that end within `length`."""
    ids = vocab.ids()
    fit = [len(tokens := smiles.tokenize(t, rep)) < length and all(x in ids for x in tokens) for t in texts]
    return [s for s, f in zip(smi, fit) if f], [t for t, f in zip(texts, fit) if f]


def _prepare(cfg: MoleculeConfig) -> MoleculeData:
    (train_path, test_path), d = paths(cfg), cfg.data
    rep = d.representation
    train_rows, validation_rows = _held_out(smiles.load_csv(train_path, d.num_train + d.num_validation), cfg)
    train_smi, train_text = _texts(train_rows, rep)
    test_smi, test_text = _texts(smiles.load_csv(test_path, d.num_test), rep)
    if len(train_smi) < cfg.train.batch_size:
        raise ConfigError(f"{train_path} has {len(train_smi)} molecules, fewer than one batch ({cfg.train.batch_size})")
    vocab = smiles.build_vocab(train_text, rep)
    length = 1 + max(len(smiles.tokenize(t, rep)) for t in train_text)
    fits = _fitting(test_smi, test_text, vocab, length, rep)
    if not fits[0]:
        raise ValueError(f"none of the {len(test_smi)} test molecules fit the training vocabulary and length")
    names = tuple(cfg.data.properties)
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
