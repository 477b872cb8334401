"""The molecule task's config: the same mechanism as the image runs' (`cvae_jax.config`), in sections.

    cfg = make_config("default", ["model.decoder_layers=2", "data.representation=kekule"])

`data` says which molecules and how they are written, `model` the network; `train`, `parallel`,
`checkpoint` and `seed` are every task's. A field is added in one place: its section below, with a
default; `--set section.field=VALUE` (`cvae-jax train --task molecules` and `train-molecules`) then
sets it, validation of its type and choices comes from the annotation, and config.json records it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cvae_jax.config import (
    CheckpointConfig,
    ConfigError,
    RunConfig,
    TrainConfig,
    apply_overrides,
    check_choices,
    from_dict,
)
from cvae_jax.data.smiles import Representation
from cvae_jax.molecules import chem

# The KL weight is warmed up linearly over this many epochs of data.num_train molecules, unless a
# config sets train.warmup_steps itself.
WARMUP_EPOCHS = 2.0


@dataclasses.dataclass
class MoleculeDataConfig:
    # CSVs (optionally .gz) with a SMILES column; "" = MOSES's split from the molsets wheel
    # (pip install --no-deps molsets)
    train_path: str = ""
    test_path: str = ""
    num_train: int = 30_000  # the first N molecules of each file
    num_test: int = 2_000
    # Validation, for the "best" checkpoint and early stopping: the molecules that follow the first
    # num_train of the training file, up to this many; a file with none left over gives its last
    # min(num_validation, 10%) instead, which training then leaves out. 0 = none (test decides).
    num_validation: int = 1_000
    properties: tuple[str, ...] = ("logp", "tpsa", "mw")  # the condition; () = an unconditional VAE
    # The strings the model reads and writes: SMILES, Kekulé SMILES (no aromatic atoms, bond orders
    # explicit) or SELFIES (every string decodes to a valid molecule)
    representation: Representation = "smiles"


@dataclasses.dataclass
class MoleculeModelConfig:
    latent_dim: int = 32
    embed_dim: int = 64
    encoder_hidden: int = 128
    decoder_hidden: int = 256
    decoder_layers: int = 1  # stacked GRUs in the decoder (MOSES's VAE: 3)
    word_dropout: float = 0.0  # share of the decoder's previous tokens hidden during training
    # SMILES and Kekulé only: the decoder also reads the grammar's state at every step (open branches
    # and rings, the current atom's free valence; cvae_jax.molecules.grammar.features)
    grammar_features: bool = False


def _train() -> TrainConfig:
    # The measured setting (experiments/README.md, "Conditional molecule generation"): batch 128, the KL
    # weight warmed up linearly over WARMUP_EPOCHS epochs, a free-bits floor of 0.1 nats per dimension.
    steps = warmup_steps(MoleculeDataConfig.num_train, 128)
    return TrainConfig(
        epochs=10, batch_size=128, eval_batch_size=500, kl_schedule="linear", warmup_steps=steps, free_bits=0.1
    )


@dataclasses.dataclass
class MoleculeConfig(RunConfig):
    """The molecule task's config: `data` and `model` on top of the shared sections, whose defaults
    here are the measured setting."""

    data: MoleculeDataConfig = dataclasses.field(default_factory=MoleculeDataConfig)
    model: MoleculeModelConfig = dataclasses.field(default_factory=MoleculeModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=_train)
    # A checkpoint after every epoch (the last two and the best by validation -ELBO are kept).
    checkpoint: CheckpointConfig = dataclasses.field(
        default_factory=lambda: CheckpointConfig(every_epochs=1, keep=2, async_save=False)
    )

    def __post_init__(self):
        self.validate()

    def validate(self) -> MoleculeConfig:
        d, m = self.data, self.model
        for section, names in (
            ("data", ("num_train", "num_test")),
            ("model", ("latent_dim", "embed_dim", "encoder_hidden", "decoder_hidden", "decoder_layers")),
        ):
            for name in names:
                value = getattr(getattr(self, section), name)
                _require(value >= 1, f"{section}.{name} must be a positive integer, got {value}")
        check_choices("data", d)
        _require(
            not (m.grammar_features and d.representation == "selfies"),
            "model.grammar_features reads the SMILES grammar: use data.representation=smiles or kekule",
        )
        _require(0.0 <= m.word_dropout < 1.0, f"model.word_dropout must be in [0, 1), got {m.word_dropout}")
        unknown = [p for p in d.properties if p not in chem.PROPERTIES]
        _require(not unknown, f"data.properties {unknown} unknown; choose from {sorted(chem.PROPERTIES)}")
        super().validate()
        _require(
            self.train.batch_size <= d.num_train,
            f"train.batch_size={self.train.batch_size} is larger than data.num_train={d.num_train}",
        )
        _require(
            d.num_validation >= 0,
            f"data.num_validation must be >= 0 (0 = no validation molecules), got {d.num_validation}",
        )
        return self

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> MoleculeConfig:
        """The config of `to_dict()` output: a checkpoint's, also of earlier versions (which kept the data
        and model fields at the top level, and before num_validation existed held nothing out)."""
        return from_dict(_sectioned(saved), cls)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _section_of(name: str) -> str | None:
    for section in (MoleculeDataConfig, MoleculeModelConfig):
        if name in {f.name for f in dataclasses.fields(section)}:
            return "data" if section is MoleculeDataConfig else "model"
    return None


def _sectioned(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config in today's layout: fields of earlier versions' flat layout moved to their section."""
    if "data" in saved and "model" in saved:
        return saved
    out = {k: v for k, v in saved.items() if _section_of(k) is None}
    out["data"] = {"num_validation": 0, **{k: v for k, v in saved.items() if _section_of(k) == "data"}}
    out["model"] = {k: v for k, v in saved.items() if _section_of(k) == "model"}
    return out


def warmup_steps(num_train: int, batch_size: int, epochs: float = WARMUP_EPOCHS) -> int:
    """The steps of `epochs` epochs of num_train molecules in batches of batch_size (at least 1)."""
    return max(1, int(epochs * (num_train // batch_size)))


def _default() -> MoleculeConfig:
    return MoleculeConfig()


def _kekule_grammar() -> MoleculeConfig:
    """The model of experiments/README.md's best row: Kekulé SMILES, the decoder reading the grammar's
    state, a 64-dimensional latent."""
    return MoleculeConfig(
        data=MoleculeDataConfig(representation="kekule"),
        model=MoleculeModelConfig(latent_dim=64, grammar_features=True),
    )


PRESETS = {"default": _default, "kekule_grammar": _kekule_grammar}


def make_config(preset: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> MoleculeConfig:
    """The named preset with `section.field=value` overrides. The KL warm-up covers WARMUP_EPOCHS epochs
    of the data.num_train and train.batch_size chosen, unless the overrides set train.warmup_steps."""
    if preset not in PRESETS:
        raise ConfigError(f"the molecule task has presets {sorted(PRESETS)}, not {preset!r}")
    cfg = apply_overrides(PRESETS[preset](), list(overrides))
    if not any(item.split("=", 1)[0].strip() == "train.warmup_steps" for item in overrides):
        cfg.train.warmup_steps = warmup_steps(cfg.data.num_train, cfg.train.batch_size)
    return cfg.validate()


def recipe(
    train_path: str = "",
    test_path: str = "",
    *,
    warmup_epochs: float = WARMUP_EPOCHS,
    **fields,
) -> MoleculeConfig:
    """The default preset, fields given by name: any field of the data or model sections (num_train,
    properties, latent_dim, ...), of train (epochs, beta, free_bits, ...), seed, or a whole section
    (train=TrainConfig(...), parallel=ParallelConfig(...)). The KL warm-up covers `warmup_epochs`
    epochs unless train.warmup_steps is given."""
    cfg = MoleculeConfig(data=MoleculeDataConfig(train_path=str(train_path), test_path=str(test_path)))
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, value in fields.items():
        if name in ("data", "model", "train", "parallel", "checkpoint", "seed"):
            setattr(cfg, name, value)
        elif _section_of(name):
            setattr(getattr(cfg, _section_of(name)), name, tuple(value) if isinstance(value, list) else value)
        elif name in train_fields:
            setattr(cfg.train, name, value)
        else:
            raise ConfigError(f"recipe() has no field {name!r}; fields: those of MoleculeConfig's sections")
    if "warmup_steps" not in fields and "train" not in fields:
        cfg.train.warmup_steps = warmup_steps(cfg.data.num_train, cfg.train.batch_size, warmup_epochs)
    return cfg.validate()
