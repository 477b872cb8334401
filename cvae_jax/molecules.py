"""Conditional molecule generation: a SMILES CVAE conditioned on molecular properties (Lim et al. 2018).

    data = molecules.prepare(cfg)                      # SMILES -> tokens; RDKit properties -> condition
    model, state, history = molecules.train(cfg, data) # the library's train step, one fused scan per epoch,
                                                       # data-parallel over cfg.parallel's devices and hosts
    smi = molecules.generate(model, state.params, key, data.condition_for({"logp": 3.0}, 1000), data.vocab)
    model, params, data = molecules.load(workdir)      # a run trained with train(..., workdir=...)

The condition is the property vector standardized with the training set's mean and std; ask for
values in the properties' own units through `MoleculeData.condition_for`. Training is the image
models' step (`cvae_jax.train.make_train_step`) with the ELBO, KL schedules and free bits of
`cvae_jax.objectives`; only the terms (`cvae_jax.sequence.make_terms`) differ. So is the program
that runs it (`cvae_jax.loop.make_program`): the training molecules split into one shard per device
after a seeded shuffle, the batch split over the devices (`MoleculeConfig.parallel`: sharded jit,
pmap or one device; several processes as for image runs), and each epoch one compiled call.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax import chem, inference, loop, objectives, parallel, resume, sequence, smiles
from cvae_jax import train as train_lib
from cvae_jax.checkpoint import Checkpoints
from cvae_jax.config import (CheckpointConfig, ConfigError, ParallelConfig, TrainConfig, validate_parallel,
                             validate_train)


@dataclasses.dataclass(frozen=True)
class MoleculeConfig:
    train_path: str
    test_path: str
    num_train: int = 50_000  # the first N molecules of each file
    num_test: int = 2_000
    properties: tuple[str, ...] = ("logp", "tpsa", "mw")  # the condition; () = an unconditional VAE
    latent_dim: int = 32
    embed_dim: int = 64
    encoder_hidden: int = 128
    decoder_hidden: int = 256
    word_dropout: float = 0.0  # share of the decoder's previous tokens hidden during training
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        epochs=10, batch_size=256, eval_batch_size=500, kl_schedule="linear", warmup_steps=2000))
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)  # train.batch_size is global
    seed: int = 0

    def __post_init__(self):
        for name in ("num_train", "num_test", "latent_dim", "embed_dim", "encoder_hidden", "decoder_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ConfigError(f"word_dropout must be in [0, 1), got {self.word_dropout}")
        unknown = [p for p in self.properties if p not in chem.PROPERTIES]
        if unknown:
            raise ConfigError(f"properties {unknown} unknown; choose from {sorted(chem.PROPERTIES)}")
        validate_train(self.train)
        validate_parallel(self.parallel)
        if self.train.batch_size > self.num_train:
            raise ConfigError(f"train.batch_size={self.train.batch_size} is larger than num_train={self.num_train}")


def recipe(train_path: str, test_path: str, *, num_train: int = 30_000, num_test: int = 2_000, epochs: int = 10,
           free_bits: float = 0.1, word_dropout: float = 0.0, seed: int = 0, **fields) -> MoleculeConfig:
    """The measured setting (experiments/README.md, "Conditional molecule generation"): batch 128, the
    KL weight warmed up linearly over the first two epochs, `free_bits` nats per latent dimension;
    `fields` sets any other MoleculeConfig field (properties, latent_dim, ...)."""
    train = TrainConfig(epochs=epochs, batch_size=128, eval_batch_size=500, kl_schedule="linear",
                        warmup_steps=2 * (num_train // 128), free_bits=free_bits)
    return MoleculeConfig(train_path, test_path, num_train=num_train, num_test=num_test, seed=seed,
                          word_dropout=word_dropout, train=train, **fields)


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

    def condition_for(self, values: dict[str, float], num: int) -> np.ndarray:
        """float32 [num, P]: the standardized condition for property `values` (in their own units);
        properties not named are held at the training median."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise ValueError(f"the model is conditioned on {list(self.names)}, not on {sorted(unknown)}")
        row = np.array([values.get(n, self.median[i]) for i, n in enumerate(self.names)])
        return np.tile(((row - self.mean) / self.std).astype(np.float32), (num, 1))


def _split(smi: list[str], vocab: smiles.Vocab, length: int, names, mean=None, std=None):
    props = chem.properties(smi, names) if names else np.zeros((len(smi), 0))
    keep = ~np.isnan(props).any(axis=1)
    smi, props = [s for s, k in zip(smi, keep) if k], props[keep]
    if mean is None:
        mean, std = props.mean(0), props.std(0) + 1e-8
    arrays = {"tokens": smiles.encode(smi, vocab, length), "properties": props.astype(np.float32),
              "condition": ((props - mean) / std).astype(np.float32)}
    return smi, arrays, mean, std


def prepare(cfg: MoleculeConfig) -> MoleculeData:
    """Loads, tokenizes and labels the data. The vocabulary and length come from the training set;
    test molecules with other tokens or longer strings are left out (`test_smiles` lists those kept).
    Molecules RDKit cannot parse are left out of both splits."""
    train_smi = smiles.load_csv(cfg.train_path, cfg.num_train)
    test_smi = smiles.load_csv(cfg.test_path, cfg.num_test)
    if len(train_smi) < cfg.train.batch_size:
        raise ConfigError(f"{cfg.train_path} has {len(train_smi)} molecules, fewer than one batch "
                          f"({cfg.train.batch_size})")
    vocab = smiles.build_vocab(train_smi)
    length = 1 + max(len(smiles.tokenize(s)) for s in train_smi)
    ids = vocab.ids()
    fits = [s for s in test_smi if len(t := smiles.tokenize(s)) < length and all(x in ids for x in t)]
    if not fits:
        raise ValueError(f"none of the {len(test_smi)} test molecules fit the training vocabulary and length")
    names = tuple(cfg.properties)
    train_smi, train, mean, std = _split(train_smi, vocab, length, names)
    test_smi, test, _, _ = _split(fits, vocab, length, names, mean, std)
    median = np.median(train["properties"], axis=0) if names else np.zeros(0)
    return MoleculeData(vocab, length, names, mean, std, median, train, test, train_smi, test_smi)


def build_model(cfg: MoleculeConfig, data: MoleculeData, prior=None) -> sequence.SmilesVAE:
    return sequence.build(data.vocab.size, data.length, latent_dim=cfg.latent_dim, condition_dim=len(data.names),
                          embed_dim=cfg.embed_dim, encoder_hidden=cfg.encoder_hidden,
                          decoder_hidden=cfg.decoder_hidden, word_dropout=cfg.word_dropout, prior=prior)


def _batch(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"tokens": arrays["tokens"], "condition": arrays["condition"]}


def _saved_config(saved: dict) -> MoleculeConfig:
    """The MoleculeConfig of a checkpoint's molecule settings (`_conditioning`'s "config", from JSON)."""
    c = saved["config"]
    return MoleculeConfig(**{**c, "properties": tuple(c["properties"]), "train": TrainConfig(**c["train"]),
                             "parallel": ParallelConfig(**c.get("parallel", {}))})


def _conditioning(cfg: MoleculeConfig, data: MoleculeData) -> dict:
    """What a saved model needs besides its weights: the config, vocabulary and condition units."""
    config = json.loads(json.dumps(dataclasses.asdict(cfg)))
    return {"config": config, "vocab": list(data.vocab.tokens), "length": data.length, "names": list(data.names),
            "mean": data.mean.tolist(), "std": data.std.tolist(), "median": data.median.tolist()}


_PROGRAMS: dict = {}  # compiled functions by (model, what else shapes them): reused within a process


def _cached(key, build: Callable):
    """build(), or what it returned for an equal key earlier in this process. Models with
    unhashable fields (a custom prior holding a list) are built anew each time."""
    try:
        hash(key)
    except TypeError:
        return build()
    if key not in _PROGRAMS:
        if len(_PROGRAMS) >= 16:
            _PROGRAMS.clear()
        _PROGRAMS[key] = build()
    return _PROGRAMS[key]


def _train_key(tc: TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(tc), sort_keys=True)


def _fresh_state(cfg: MoleculeConfig, model, length: int):
    tokens = jnp.zeros((2, length), jnp.int32)
    condition = jnp.zeros((2, model.condition_dim)) if model.conditional else None
    init = _cached(("init", model, _train_key(cfg.train)),
                   lambda: jax.jit(train_lib.fresh_state(model, train_lib.make_optimizer(cfg.train))))
    return init(train_lib.purpose_key(cfg.seed, train_lib.INIT), tokens, condition)


def _program(model, tc: TrainConfig, layout: parallel.Layout, rows: dict[str, np.ndarray], global_batch: int,
             total_steps: int) -> loop.Program:
    """The compiled training calls of a run (a whole epoch per call), holding `rows` on the devices:
    training again or resuming in the same process compiles nothing new."""

    built = []

    def build():
        loss = objectives.make_elbo_loss(sequence.make_terms(model, training=True), cfg=tc, total_steps=total_steps)
        built.append(True)  # make_program placed `rows` on the devices itself
        return loop.make_program(layout, loss, train_lib.make_optimizer(tc), rows, global_batch, lambda steps: steps)

    shapes = tuple((name, value.shape) for name, value in rows.items())
    program = _cached(("train", model, _train_key(tc), layout.mode, layout.mesh, global_batch, total_steps, shapes),
                      build)
    return program if built else dataclasses.replace(program, data=layout.put_sharded(rows))


def _eval_step(model):
    return _cached(("eval", model), lambda: jax.jit(train_lib.make_eval_step(sequence.make_terms(model))))


# What may change when a saved run is resumed (as for image runs, cvae_jax.resume.RESUMABLE): how long
# it trains, the evaluation batch, the KL cycle length kept, and the devices (another device count
# warns). Anything else changes the model, the data or the optimization.
_RESUMABLE = ("config.train.epochs", "config.train.eval_batch_size", "config.train.cycle_steps", "config.parallel.")


def _differences(saved: dict | None, wanted: dict) -> list[str]:
    """'field: saved -> wanted' for what differs between a checkpoint's molecule settings and a run's."""
    if not isinstance(saved, dict):
        return ["the checkpoint holds no molecule run"]
    return resume.differences(saved, wanted, _RESUMABLE)


def _checkpoints(workdir) -> Checkpoints:
    return Checkpoints(workdir, CheckpointConfig(keep=2, best_metric="neg_elbo", async_save=False))


def train(cfg: MoleculeConfig, data: MoleculeData, *, prior=None, workdir: str | Path | None = None,
          log: Callable[[str], None] | None = print):
    """Trains from the seed: (model, state, history). history: one dict per epoch (epoch 0 = untrained)
    with the test set's neg_elbo, recon and kl (nats per molecule) and the epoch's training means.

    With `workdir`, an Orbax checkpoint is written after every epoch (the last two and the best by
    test -ELBO are kept), and a workdir that holds a run of the same config and data resumes it:
    the same numbers as a run that never stopped (a finished run returns at once). A larger
    train.epochs trains a finished run on; other settings that differ are refused, by name.

    Over several devices (cfg.parallel) each device trains on its shard of the molecules and draws
    its own noise: the same numbers for sharded jit and pmap, other numbers than on one device. With
    several processes every process calls this; only process 0 logs."""
    tc = cfg.train
    model = build_model(cfg, data, prior)
    layout = parallel.make_layout(cfg.parallel)
    global_batch = parallel.global_batch_size(tc.batch_size, cfg.parallel, layout.num_shards)
    rows = parallel.shard_rows(_batch(data.train), layout.num_shards, layout.local_shards, cfg.seed)
    steps = len(rows["tokens"][0]) // (global_batch // layout.num_shards)
    if steps < 1:
        raise ConfigError(f"{len(data.train['tokens'])} training molecules over {layout.num_shards} devices make no "
                          f"batch of {global_batch}; use fewer devices or a smaller train.batch_size")
    log = log if parallel.is_primary() else None
    saved = _conditioning(cfg, data)
    ckpts = _checkpoints(workdir) if workdir is not None else None
    latest = ckpts.resolve("latest") if ckpts is not None and ckpts.steps() else None
    saved_run = ckpts.read_meta(latest).get("molecules") if latest is not None else None
    differences = _differences(saved_run, saved) if latest is not None else []
    if differences:  # refused before compiling anything
        ckpts.close()
        raise ConfigError(f"{workdir} holds a molecule run with another config or data set ({'; '.join(differences[:4])}"
                          f"{'; ...' if len(differences) > 4 else ''}); use a new workdir (nothing there was changed)")
    if latest is not None:
        saved_train = _saved_config(saved_run).train
        change = resume.kl_cycle_change(saved_train, steps * saved_train.epochs, tc, steps * tc.epochs)
        if change:
            ckpts.close()
            raise ConfigError(f"{workdir} cannot be resumed with these settings: {change} (nothing there was changed)")
    program = _program(model, tc, layout, rows, global_batch, steps * tc.epochs)
    eval_step = _eval_step(model)
    state = layout.put_replicated(jax.device_get(_fresh_state(cfg, model, data.length)))
    shuffle_key, train_key = (np.asarray(jax.random.key_data(train_lib.purpose_key(cfg.seed, purpose)))
                              for purpose in (train_lib.SHUFFLE, train_lib.TRAIN))
    eval_key = train_lib.purpose_key(cfg.seed, train_lib.EVAL)
    key_data = jax.random.key_data(train_lib.base_key(cfg.seed))

    def test_scores(epoch):
        return train_lib.evaluate_dataset(eval_step, layout.local_value(state.params), _batch(data.test),
                                          tc.eval_batch_size, jax.random.fold_in(eval_key, epoch))

    try:
        if latest is not None:
            restored, _, meta = ckpts.restore(latest, layout.global_value(state), key_data)
            state = layout.from_global(restored)
            history = meta["history"]
            if meta.get("num_devices", 1) != layout.num_shards:
                warnings.warn(f"{workdir} was trained on {meta.get('num_devices', 1)} devices and resumes on "
                              f"{layout.num_shards}: the run goes on correctly, but not bit-identical to an "
                              "uninterrupted one (each device holds other molecules and draws other noise)",
                              stacklevel=2)
        else:
            history = [{"epoch": 0, "test": test_scores(0)}]
        for epoch in range(len(history), tc.epochs + 1):
            start = time.perf_counter()
            perm = program.permute(shuffle_key, epoch)
            [(first, size)] = program.call_sizes()  # the whole epoch in one call
            state, sums = program.calls[size](state, program.data, perm, first, train_key)
            sums = jax.device_get(layout.local_value(sums))
            if sums["nonfinite"] > 0:
                raise FloatingPointError(f"epoch {epoch}: {int(sums['nonfinite'])} steps had non-finite gradients; "
                                         f"lower train.learning_rate (the last checkpoint is kept)")
            seconds = time.perf_counter() - start
            row = {"epoch": epoch, "train": {k: float(v) / steps for k, v in sums.items()},
                   "test": test_scores(epoch), "seconds": seconds, "samples_per_s": steps * global_batch / seconds}
            history.append(row)
            if ckpts is not None:
                ckpts.save(layout.global_value(state), key_data,
                           {"position": {"epoch": epoch + 1, "batch": 0}, "molecules": saved, "history": history,
                            "num_devices": layout.num_shards},
                           {"neg_elbo": row["test"]["neg_elbo"]})
            if log:
                log(f"epoch {epoch}: train loss {row['train']['loss']:.2f}, test -ELBO {row['test']['neg_elbo']:.2f} "
                    f"(recon {row['test']['recon']:.2f}, KL {row['test']['kl']:.2f}), "
                    f"{row['samples_per_s']:.0f} molecules/s")
    finally:
        if ckpts is not None:
            ckpts.close()
    return model, layout.local_value(state), history


def load(workdir: str | Path, which: str | int = "best", prior=None):
    """(model, params, data) of a saved molecule run; `data` carries the vocabulary and condition units
    (its train and test sets are empty). which: "best" (by test -ELBO), "latest" or a step."""
    with Checkpoints(workdir, read_only=True) as ckpts:
        step = ckpts.resolve(which)
        saved = ckpts.read_meta(step).get("molecules")
        if saved is None:
            raise ConfigError(f"{workdir} holds no molecule run (cvae_jax.molecules.train writes one)")
        cfg = _saved_config(saved)
        empty = {"tokens": np.zeros((0, saved["length"]), np.int32)}
        data = MoleculeData(smiles.Vocab(tuple(saved["vocab"])), saved["length"], tuple(saved["names"]),
                            *(np.asarray(saved[k]) for k in ("mean", "std", "median")), empty, empty, [], [])
        model = build_model(cfg, data, prior)
        target = _fresh_state(cfg, model, data.length)
        state, _, _ = ckpts.restore(step, target, jax.random.key_data(train_lib.base_key(cfg.seed)))
    return model, state.params, data


@inference.compiled_per_model(5)
def _generate_tokens(model, params, z, condition, key, temperature: float):
    """Token rows [N, L] from latents z; compiled once per model, temperature and shape."""
    return model.apply(params, z, condition, key, temperature, method=model.generate)


def generate(model, params, key, condition: np.ndarray | None, vocab: smiles.Vocab, num: int | None = None,
             temperature: float = 1.0) -> list[str]:
    """SMILES drawn from p(x | z, c), z ~ p(z | c): one per condition row (or `num`, unconditional)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if condition is not None:
        condition = jnp.asarray(condition, jnp.float32)
        num = condition.shape[0]
    if not num or num < 1:
        raise ValueError(f"the number of molecules to draw must be a positive integer, got {num}")
    z = model.apply(params, jax.random.fold_in(key, 0), num, condition, method=model.prior_sample)
    tokens = _generate_tokens(model, params, z, condition, jax.random.fold_in(key, 1), float(temperature))
    return smiles.decode(np.asarray(tokens), vocab)


def reconstruction(model, params, arrays: dict[str, np.ndarray], vocab: smiles.Vocab) -> dict[str, float]:
    """Greedy decoding of each molecule's posterior mean: the share decoded exactly, and per token."""
    condition = jnp.asarray(arrays["condition"]) if model.conditional else None
    mean, _ = model.apply(params, jnp.asarray(arrays["tokens"]), condition, method=model.encode)
    out = np.asarray(_generate_tokens(model, params, mean, condition, jax.random.key(0), 0.0))
    tokens = arrays["tokens"]
    scored = tokens != smiles.PAD
    exact = [a == b for a, b in zip(smiles.decode(out, vocab), smiles.decode(tokens, vocab))]
    return {"exact": float(np.mean(exact)),
            "token_accuracy": float(np.sum((out == tokens) & scored) / np.sum(scored))}


def property_control(model, params, data: MoleculeData, key, name: str, targets: Sequence[float],
                     num: int = 500, temperature: float = 1.0) -> list[dict]:
    """For each target value of property `name` (others at the training median): `num` molecules
    drawn under that condition, their validity, and the property measured by RDKit on the valid ones."""
    col = data.names.index(name)
    rows = []
    for i, target in enumerate(targets):
        smi = generate(model, params, jax.random.fold_in(key, i), data.condition_for({name: target}, num), data.vocab,
                       temperature=temperature)
        values = chem.properties(smi, data.names)[:, col]
        valid = values[~np.isnan(values)]
        rows.append({"property": name, "target": float(target), "validity": float(len(valid) / num),
                     "mean": float(np.mean(valid)) if len(valid) else float("nan"),
                     "std": float(np.std(valid)) if len(valid) else float("nan"),
                     "mae": float(np.mean(np.abs(valid - target))) if len(valid) else float("nan")})
    return rows
