"""Configs as data: nested dataclasses, presets, dotted overrides, JSON round trip.

A config is printable, saved next to every run, and fully determines a run together with its seed.
Variants start from `get_config()` and override a few fields::

    cfg = get_config(model="vae", preset="article")
    cfg = apply_overrides(cfg, ["train.epochs=5", "model.latent_dim=8"])
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any

# The allowed values of a field are its Literal type, defined once here; validation, `--set` parsing
# and the CLI's choices read them from the type (choices()).
Kind = typing.Literal["vae", "cvae"]
Architecture = typing.Literal["mlp", "resnet", "hvae", "vqvae"]
Likelihood = typing.Literal["bernoulli", "gaussian", "discretized_logistic"]
Source = typing.Literal["embedded", "npz", "idx", "tfds", "series", "sprites"]
Optimizer = typing.Literal["adam", "adamw", "sgd", "rmsprop"]
KLSchedule = typing.Literal["constant", "linear", "cyclical"]
ParallelMode = typing.Literal["sharded", "pmap", "single"]
Distributed = typing.Literal["auto", "on", "off"]
NonFinite = typing.Literal["stop", "skip"]
ComputeDtype = typing.Literal["float32", "bfloat16", "float16"]
Kernels = typing.Literal["auto", "flax", "tuned"]
LRSchedule = typing.Literal["constant", "cosine", "linear"]
TCEstimator = typing.Literal["mss", "mws"]
MMDKernel = typing.Literal["imq", "rbf"]

MODELS = typing.get_args(Kind)
PRESETS = ("default", "article", "resnet", "hvae", "series", "sprites")
ARCHITECTURES = typing.get_args(Architecture)
LIKELIHOODS = typing.get_args(Likelihood)
SOURCES = typing.get_args(Source)
OPTIMIZERS = typing.get_args(Optimizer)
KL_SCHEDULES = typing.get_args(KLSchedule)
PARALLEL_MODES = typing.get_args(ParallelMode)
DISTRIBUTED = typing.get_args(Distributed)
NONFINITE = typing.get_args(NonFinite)
COMPUTE_DTYPES = typing.get_args(ComputeDtype)
KERNELS = typing.get_args(Kernels)


class ConfigError(ValueError):
    """A config value is invalid; the message names the field, the value and the fix."""


@dataclasses.dataclass
class ModelConfig:
    kind: Kind = "cvae"
    # "mlp": the dense (and optional conv) encoder and decoder below; "resnet": residual conv stages
    # (cvae_jax.core.resnet) of resnet_widths channels, resnet_blocks blocks each, for any [H, W, C];
    # "hvae": a hierarchical top-down VAE (cvae_jax.core.hierarchical) on the same stages, with
    # hvae_groups groups of hvae_latent_channels-channel latents per resolution.
    architecture: Architecture = "mlp"
    latent_dim: int = 16
    # Encoder: optional conv stack, then dense layers. Decoder: dense layers, then optional
    # transposed-conv stack (needs H and W divisible by 4).
    encoder_conv: tuple[int, ...] = ()
    encoder_conv_stride: int = 2  # stride of every encoder conv layer (same padding)
    conv_kernel: int = 3  # the kernel size of every encoder and decoder conv layer (4: Locatello et al.'s)
    encoder_hidden: tuple[int, ...] = (512, 512)
    decoder_hidden: tuple[int, ...] = (512, 512)
    decoder_conv: tuple[int, ...] = ()
    # Where the condition enters the encoder: "input" (concatenated to the flattened features
    # before the dense layers) or "head" (after them, as in the article's CVAE).
    condition_site: str = "input"
    # "bernoulli", "gaussian" or "discretized_logistic" (a mixture of logistic_mixtures discretized
    # logistics per data dimension, for 8-bit images: a proper likelihood, reported in bits/dim)
    likelihood: Likelihood = "bernoulli"
    logistic_mixtures: int = 10
    gaussian_scale: float = 0.1  # fixed std of the Gaussian likelihood (initial value if learned)
    learn_scale: bool = False  # learn one std per data dimension (Gaussian likelihood only)
    # The prior p(z) (or p(z | c)): a name registered in cvae_jax.core.priors (standard_normal,
    # learned_gaussian, mixture, vamp, conditional, flow, or your own).
    prior: str = "standard_normal"
    # q(z | x): a name in the posterior registry (cvae_jax.core.posteriors): "diagonal_gaussian", or yours.
    posterior: str = "diagonal_gaussian"
    iaf_steps: int = 2  # posterior=iaf: autoregressive steps (MADE layers, one hidden layer each)
    iaf_hidden: int = 64  # ... units of each MADE's hidden layer
    prior_components: int = 10  # mixture components / VampPrior pseudo-inputs
    flow_layers: int = 4  # RealNVP coupling layers of the flow prior
    # Mixed precision: "bfloat16" runs encoder and decoder matmuls/convs in bfloat16 (fast on GPU
    # and TPU; slow on most CPUs); parameters, the likelihood, the KL and the loss stay float32.
    compute_dtype: ComputeDtype = "float32"
    # Layer backend (cvae_jax.nn.layers): "flax" (stock flax.linen), "tuned" (the same parameters with
    # custom gradients written for XLA:CPU) or "auto" (tuned on CPU, flax elsewhere).
    kernels: Kernels = "auto"
    resnet_widths: tuple[int, ...] = (64, 128, 256)  # one stage per width, each after the first at half size
    resnet_blocks: int = 2
    # Recompute each residual block's activations in the backward pass (jax.checkpoint) instead of
    # keeping them: less memory, more compute (resnet only).
    remat: bool = False
    hvae_groups: int = 2
    hvae_latent_channels: int = 16
    # "vqvae" (van den Oord et al. 2017): conv stages of vq_widths channels, each halving the grid, to
    # latent_dim-dimensional vectors quantized to codebook_size codes; the codebook learns by moving
    # averages of decay codebook_decay; the encoder's commitment loss weighs `commitment`.
    vq_widths: tuple[int, ...] = (32, 64)
    codebook_size: int = 64
    codebook_decay: float = 0.99
    commitment: float = 0.25


@dataclasses.dataclass
class DataConfig:
    source: Source = "embedded"
    # .npz file (npz), folder of MNIST-format IDX files (idx), or the training series' CSV (series)
    path: str = ""
    name: str = ""  # TFDS dataset name (tfds)
    data_dir: str = ""  # TFDS data_dir (tfds and idx); empty: the TFDS default / a temp folder
    train_split: str = "train"
    test_split: str = "test"
    binarize: bool = False  # dynamic binarization: x ~ Bernoulli(intensity), redrawn every step
    # Validation data, for choosing the "best" checkpoint, early stopping and hyper-parameters (the
    # test split is only reported): the share of the training examples held out (seeded by `seed`),
    # or, with validation_split set, a TFDS data set's own validation split. 0 = none.
    validation: float = 0.1
    validation_split: str = ""
    # series: a timestamp,value,is_anomaly CSV (optionally .gz) per split, cut into sliding windows of
    # `window` values every `stride`, scaled to [0, 1] with the training series' range (cvae_jax.data.
    # series); path and test_path "" = the GutenTAG ECG series of the aeon wheel (TRAIN_NA and TEST).
    test_path: str = ""
    window: int = 100
    stride: int = 1
    # Train on the first num_train training examples only (0 = all); for sprites, a seeded choice of
    # the grid's images (the rest are never rendered).
    num_train: int = 0


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 1000
    optimizer: Optimizer = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # adamw only
    beta: float = 1.0  # weight of the KL term; the reported ELBO always uses beta = 1
    # The training objective: "elbo" (beta-ELBO), "iwae" (importance-weighted bound, Burda et al.
    # 2015, with iwae_samples samples) or "hybrid" (Sohn et al. 2015: alpha * CVAE + (1 - alpha) * GSNN).
    objective: str = "elbo"
    iwae_samples: int = 5
    hybrid_alpha: float = 0.5
    # Options of the disentangling, MMD and multi-sample objectives (docs/objectives.md).
    # beta_tcvae (Chen et al. 2018): train.beta weighs the total correlation, tc_alpha the index-code
    # mutual information, tc_gamma the dimension-wise KL; log q(z) estimated by minibatch-stratified
    # ("mss") or minibatch-weighted ("mws") sampling.
    tc_alpha: float = 1.0
    tc_gamma: float = 1.0
    tc_estimator: TCEstimator = "mss"
    # dip_vae_i / dip_vae_ii (Kumar et al. 2018): weights of the off-diagonal and diagonal penalties on
    # Cov_q(z) - I.
    dip_lambda_od: float = 10.0
    dip_lambda_d: float = 100.0
    # info_vae (Zhao et al. 2017): recon + (1 - info_alpha) KL + (info_alpha + mmd_weight - 1) MMD;
    # wae (WAE-MMD, Tolstikhin et al. 2018): recon + mmd_weight MMD. The kernel's scale C = 2 D mmd_scale^2.
    info_alpha: float = 0.0
    mmd_weight: float = 10.0
    mmd_kernel: MMDKernel = "imq"
    mmd_scale: float = 1.0
    # miwae (Rainforth et al. 2018): the mean of miwae_groups independent iwae_samples-sample bounds.
    miwae_groups: int = 4
    # factor_vae (Kim & Mnih 2018): the ELBO + factor_gamma x the total correlation that a discriminator
    # (hidden layers critic_hidden, leaky ReLU) estimates; it trains in the same step with its own Adam
    # (critic_learning_rate, betas 0.5, 0.9) on the batch's latents against their dimension-wise permutation.
    factor_gamma: float = 10.0
    critic_hidden: tuple[int, ...] = (1000, 1000, 1000, 1000, 1000, 1000)
    critic_learning_rate: float = 1e-4
    # The learning rate over the run: "constant", or a "cosine" or "linear" decay to
    # lr_final_fraction x learning_rate at the last step; either after a linear warm-up from 0 over
    # lr_warmup_steps steps (0 = none; a warm-up with "constant" holds the rate after it).
    lr_schedule: LRSchedule = "constant"
    lr_warmup_steps: int = 0
    lr_final_fraction: float = 0.0
    # KL annealing: "constant" (beta), "linear" (0 -> beta over warmup_steps), "cyclical"
    # (Fu et al. 2019: num_cycles cycles over the run, each ramping 0 -> beta over its first half).
    kl_schedule: KLSchedule = "constant"
    warmup_steps: int = 1000
    num_cycles: int = 4
    # Cyclical: the length of one cycle in steps; 0 = the run's steps / num_cycles. A fixed length
    # keeps the cycles when a run is trained on with more epochs (the default's would stretch).
    cycle_steps: float = 0.0
    free_bits: float = 0.0  # per-dimension KL floor in nats (Kingma et al. 2016); 0 = off
    # Train steps fused into one compiled call with lax.scan. 0 = auto: the whole epoch for dense
    # models, 1 for convolutional models on CPU (XLA:CPU runs convolutions slowly inside scan).
    steps_per_call: int = 0
    # Gradient accumulation: each device's batch share in this many equal chunks (lax.scan),
    # gradients averaged: the same update with 1/microbatches of the activation memory (for big
    # batches; on XLA:CPU it can pay where a big batch's activations leave the cache, see
    # docs/performance.md). 1 = off.
    microbatches: int = 1
    # Write the chunks out instead of looping over them (lax.scan unroll): the same update. On XLA:CPU
    # this is what makes microbatching pay for conv models (convolutions inside a loop are slow there);
    # it slows dense models, and compile time grows with the chunks.
    unroll_microbatches: bool = False
    # A non-finite loss or gradient: "stop" (raise, keep the last checkpoint) or "skip" (leave the
    # state unchanged for that step, with optax.apply_if_finite, and count it in the metrics);
    # skip stops after max_consecutive_skips non-finite steps in a row.
    on_nonfinite: NonFinite = "stop"
    max_consecutive_skips: int = 20
    # Gradient spikes (VDVAE's practice for deep hierarchical VAEs): clip the gradients' global norm to
    # grad_clip, and skip the update of a step whose gradient norm exceeds skip_threshold. 0 = off.
    grad_clip: float = 0.0
    skip_threshold: float = 0.0
    # An exponential moving average of the parameters with this decay (e.g. 0.999) is kept and used to
    # evaluate, checkpoint-select and sample. 0 = off.
    ema_decay: float = 0.0
    # TensorBoard event files in the run directory (every metrics.jsonl number, and the final image
    # grids): `tensorboard --logdir runs/`. metrics.jsonl is written either way.
    tensorboard: bool = True
    # More trackers that receive every metrics.jsonl line (cvae_jax.training.trackers): "mlflow" (a local
    # file store in the run directory unless MLFLOW_TRACKING_URI is set), "wandb" (offline unless
    # WANDB_MODE says otherwise), or a name you registered. metrics.jsonl is written either way.
    trackers: tuple[str, ...] = ()
    # Early stopping: end the run after this many epochs without a better validation -ELBO (the
    # "best" checkpoint holds the best one). 0 = off. Needs validation data.
    early_stopping_patience: int = 0


@dataclasses.dataclass
class CheckpointConfig:
    every_epochs: int = 10  # save every N epochs; also at the end and on SIGTERM/SIGINT. 0 = only those
    # also save at the end of each compiled call that reaches a multiple of N steps, mid-epoch too
    # (for epochs too long to lose); with train.steps_per_call=0 the calls are then N steps. 0 = off
    every_steps: int = 0
    keep: int = 3  # keep the last K checkpoints ...
    # ... and the best by this metric (lower is better) of the validation data (of the test data when
    # there is none); "" = none
    best_metric: str = "neg_elbo"
    async_save: bool = True  # write in a background thread while training goes on


@dataclasses.dataclass
class ParallelConfig:
    # "sharded": jax.jit over a device mesh (batch split over devices, state replicated);
    # "pmap": jax.pmap of the same step; "single": one device. Results depend on the device
    # count (each device draws its own noise), not on the mode.
    mode: ParallelMode = "sharded"
    num_devices: int = 0  # devices per process; 0 = all local devices
    # train.batch_size is the global batch; per_device_batch_size > 0 sets it to this x devices.
    per_device_batch_size: int = 0
    # Several processes (hosts): "auto" starts jax.distributed when a coordinator address is
    # given here or in JAX_COORDINATOR_ADDRESS; "on" always (cluster auto-detection: TPU pods,
    # SLURM, Open MPI); "off" never.
    distributed: Distributed = "auto"
    coordinator_address: str = ""  # host:port of process 0
    num_processes: int = 0  # 0 = from JAX_NUM_PROCESSES or the cluster
    process_id: int = -1  # -1 = from JAX_PROCESS_ID or the cluster


@dataclasses.dataclass
class RunConfig:
    """What every task's config holds (the trainer reads only these): how to train, on which devices,
    how to checkpoint, and the seed. A task's config subclasses it and adds its own sections, e.g.
    `model` and `data`; `validate()` checks these four, and a subclass extends it."""

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def validate(self):
        """Checks the shared sections (each section's finite floats and Literal choices, then its ranges);
        raises ConfigError naming the field. Returns the config."""
        validate_train(self.train)
        validate_parallel(self.parallel)
        validate_checkpoint(self.checkpoint)
        return self


@dataclasses.dataclass
class Config(RunConfig):
    """The image (and series-window) task's config: `model` and `data` on top of the shared sections."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    preset: str = "default"

    def validate(self) -> Config:
        return validate(self)


def _article_model(kind: str) -> ModelConfig:
    if kind == "vae":
        # flatten 784 -> Dense 256 relu -> latent 2 -> Dense 256 relu -> 784
        return ModelConfig(kind="vae", latent_dim=2, encoder_hidden=(256,), decoder_hidden=(256,))
    # Conv2D(32, 3x3, same, relu) -> flatten -> Dense 64 relu -> concat one-hot -> latent 2;
    # decoder concat(z, label) -> Dense 64 relu -> 784.
    return ModelConfig(
        kind="cvae",
        latent_dim=2,
        encoder_conv=(32,),
        encoder_conv_stride=1,
        encoder_hidden=(64,),
        decoder_hidden=(64,),
        condition_site="head",
    )


def get_config(model: str = "cvae", preset: str = "default") -> Config:
    """The default config for `model` ("vae" or "cvae") and `preset` ("default" or "article")."""
    if model not in MODELS:
        raise ConfigError(f"model must be one of {MODELS}, got {model!r}")
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {PRESETS}, got {preset!r}")
    if preset == "article":
        model_cfg = _article_model(model)
    elif preset == "hvae":
        # A hierarchical top-down VAE (VDVAE/NVAE style) with the same likelihood.
        model_cfg = ModelConfig(
            kind=model, architecture="hvae", resnet_blocks=1, likelihood="discretized_logistic", logistic_mixtures=10
        )
    elif preset == "series":
        # Sliding windows of a series as [window, 1, 1] "images", a Gaussian likelihood with a learned
        # scale (experiments/anomaly_ecg.py's model).
        model_cfg = ModelConfig(
            kind=model,
            latent_dim=16,
            encoder_hidden=(256, 256),
            decoder_hidden=(256, 256),
            likelihood="gaussian",
            gaussian_scale=0.05,
            learn_scale=True,
        )
        return Config(model=model_cfg, data=DataConfig(source="series"), preset=preset)
    elif preset == "resnet":
        # A ResNet VAE for 8-bit colour (or grey) images: 10 discretized logistics per value (bits/dim).
        model_cfg = ModelConfig(
            kind=model, architecture="resnet", latent_dim=64, likelihood="discretized_logistic", logistic_mixtures=10
        )
    elif preset == "sprites":
        # The disentanglement literature's model for 64 x 64 sprites (Locatello et al. 2019, Table 1):
        # 4 x 4 convs 32-32-64-64 of stride 2, dense 256, latent 10, its transpose, Bernoulli pixels,
        # Adam 1e-4, batch 64; data.source=sprites (cvae_jax.data.sprites).
        model_cfg = ModelConfig(
            kind=model,
            latent_dim=10,
            encoder_conv=(32, 32, 64, 64),
            conv_kernel=4,
            encoder_hidden=(256,),
            decoder_hidden=(256,),
            decoder_conv=(64, 32, 32, 32),
        )
        train = TrainConfig(epochs=1, batch_size=64, learning_rate=1e-4, eval_batch_size=500)
        return Config(model=model_cfg, data=DataConfig(source="sprites"), train=train, preset=preset)
    else:
        model_cfg = ModelConfig(kind=model)
    return Config(model=model_cfg, preset=preset)


def field_types(cls) -> dict[str, Any]:
    """A dataclass's fields and their resolved types (Literal choices, nested sections, tuples)."""
    return typing.get_type_hints(cls)


def choices(cls, name: str) -> tuple | None:
    """The allowed values of field `name` of the dataclass `cls` (its Literal type), or None."""
    hint = field_types(cls)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


def _convert(value: str, hint: Any, field: str) -> Any:
    """Parses a command-line string into the type of a config field."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{field} must be one of {allowed}, got {value!r}")
        return value
    try:
        if hint is bool:
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if origin is tuple:
            (elem, *_), text = typing.get_args(hint), value.strip().strip("()[]")
            return tuple(elem(v) for v in text.replace(" ", "").split(",") if v)
        return hint(value)
    except ValueError:
        raise ConfigError(f"cannot parse {field}={value!r} as {getattr(hint, '__name__', hint)}") from None


def apply_overrides(config, overrides: list[str]):
    """Returns a copy of `config` (a dataclass of sections, e.g. Config or a task's config) with
    `dotted.field=value` overrides applied and validated (by its `validate()`, where it has one)."""
    config = from_dict(to_dict(config), type(config))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value, e.g. train.epochs=5")
        path, value = item.split("=", 1)
        *parents, leaf = path.strip().split(".")
        node = config
        for name in parents:
            if not dataclasses.is_dataclass(getattr(node, name, None)):
                sections = [
                    f.name for f in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, f.name))
                ]
                raise ConfigError(f"unknown config section {name!r} in override {item!r}; sections: {sections}")
            node = getattr(node, name)
        types = field_types(type(node))
        if leaf not in types or dataclasses.is_dataclass(getattr(node, leaf)):
            raise ConfigError(f"unknown config field {path!r}; fields here: {sorted(types)}")
        setattr(node, leaf, _convert(value, types[leaf], path))
    if hasattr(config, "validate"):
        config.validate()
    return config


def to_dict(config) -> dict[str, Any]:
    """A config as JSON-able data (nested dicts)."""
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def from_dict(data: dict[str, Any], cls=None):
    """Rebuilds a config of dataclass `cls` (default Config) from `to_dict()` output (e.g. a saved
    config.json), nested sections and tuples from the fields' types; unknown keys are errors. A
    Config saved before data.validation existed held nothing out: it is read with validation 0."""
    cls = Config if cls is None else cls
    if cls is Config and isinstance(data.get("data"), dict) and "validation" not in data["data"]:
        data = {**data, "data": {**data["data"], "validation": 0.0}}
    return _build(cls, data)


def _build(cls, values: dict[str, Any]):
    types = field_types(cls)
    unknown = set(values) - set(types)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        hint = types[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _build(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def check_choices(name: str, section) -> None:
    """Every Literal field of the dataclass `section` (named `name` in messages) holds an allowed value."""
    for field, hint in field_types(type(section)).items():
        if typing.get_origin(hint) is typing.Literal:
            value, allowed = getattr(section, field), typing.get_args(hint)
            _require(value in allowed, f"{name}.{field} must be one of {allowed}, got {value!r}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _require_finite(name: str, section) -> None:
    """Every float field of the dataclass `section` (named `name` in messages) is finite."""
    for f in dataclasses.fields(section):
        x = getattr(section, f.name)
        _require(not isinstance(x, float) or math.isfinite(x), f"{name}.{f.name} must be a finite number, got {x}")


def validate_train(t: TrainConfig) -> None:
    """Checks the train section (also of molecule runs); raises ConfigError naming the field."""
    _require_finite("train", t)
    check_choices("train", t)
    _require(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _require(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    _require(t.eval_batch_size >= 1, f"train.eval_batch_size must be >= 1, got {t.eval_batch_size}")
    _require(t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}")
    _require(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    _require(t.beta >= 0, f"train.beta must be >= 0, got {t.beta}")
    _require(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 = off), got {t.grad_clip}")
    _require(t.skip_threshold >= 0, f"train.skip_threshold must be >= 0 (0 = off), got {t.skip_threshold}")
    _require(0.0 <= t.ema_decay < 1.0, f"train.ema_decay must lie in [0, 1) (0 = off), got {t.ema_decay}")
    # train.objective names an entry of the objective registry (cvae_jax.core.objectives), checked when
    # the model is built, so that objectives registered in a user's file are accepted too.
    _require(bool(t.objective), "train.objective must name a registered objective (elbo, iwae, hybrid or yours)")
    _require(t.iwae_samples >= 1, f"train.iwae_samples must be >= 1, got {t.iwae_samples}")
    _require(0.0 <= t.hybrid_alpha <= 1.0, f"train.hybrid_alpha must lie in [0, 1], got {t.hybrid_alpha}")
    _require(t.miwae_groups >= 1, f"train.miwae_groups must be >= 1, got {t.miwae_groups}")
    _require(t.factor_gamma >= 0, f"train.factor_gamma must be >= 0, got {t.factor_gamma}")
    _require(t.critic_learning_rate > 0, f"train.critic_learning_rate must be > 0, got {t.critic_learning_rate}")
    _require(
        bool(t.critic_hidden) and all(w >= 1 for w in t.critic_hidden),
        f"train.critic_hidden must be one or more positive widths, got {t.critic_hidden}",
    )
    _require(t.mmd_scale > 0, f"train.mmd_scale must be > 0, got {t.mmd_scale}")
    _require(t.mmd_weight >= 0, f"train.mmd_weight must be >= 0, got {t.mmd_weight}")
    _require(0.0 <= t.info_alpha <= 1.0, f"train.info_alpha must lie in [0, 1], got {t.info_alpha}")
    for name in ("tc_alpha", "tc_gamma", "dip_lambda_od", "dip_lambda_d"):
        _require(getattr(t, name) >= 0, f"train.{name} must be >= 0, got {getattr(t, name)}")
    _require(t.lr_warmup_steps >= 0, f"train.lr_warmup_steps must be >= 0 (0 = none), got {t.lr_warmup_steps}")
    _require(
        0.0 <= t.lr_final_fraction <= 1.0, f"train.lr_final_fraction must lie in [0, 1], got {t.lr_final_fraction}"
    )
    _require(t.warmup_steps >= 1, f"train.warmup_steps must be >= 1, got {t.warmup_steps}")
    _require(t.num_cycles >= 1, f"train.num_cycles must be >= 1, got {t.num_cycles}")
    _require(t.cycle_steps >= 0, f"train.cycle_steps must be >= 0 (0 = steps / num_cycles), got {t.cycle_steps}")
    _require(t.free_bits >= 0, f"train.free_bits must be >= 0, got {t.free_bits}")
    _require(t.steps_per_call >= 0, f"train.steps_per_call must be >= 0 (0 = auto), got {t.steps_per_call}")
    _require(t.microbatches >= 1, f"train.microbatches must be >= 1, got {t.microbatches}")
    _require(t.max_consecutive_skips >= 1, f"train.max_consecutive_skips must be >= 1, got {t.max_consecutive_skips}")
    _require(
        t.early_stopping_patience >= 0,
        f"train.early_stopping_patience must be >= 0 (0 = off), got {t.early_stopping_patience}",
    )


def validate_parallel(p: ParallelConfig) -> None:
    """Checks the parallel section (also of molecule runs); raises ConfigError naming the field."""
    check_choices("parallel", p)
    _require(p.num_devices >= 0, f"parallel.num_devices must be >= 0 (0 = all local devices), got {p.num_devices}")
    _require(
        not (p.mode == "single" and p.num_devices > 1),
        f"parallel.mode=single uses one device, but parallel.num_devices={p.num_devices}",
    )
    _require(
        p.per_device_batch_size >= 0,
        f"parallel.per_device_batch_size must be >= 0 (0 = use train.batch_size), got {p.per_device_batch_size}",
    )
    _require(p.num_processes >= 0, f"parallel.num_processes must be >= 0, got {p.num_processes}")
    _require(p.process_id >= -1, f"parallel.process_id must be >= 0 (or -1 = from the environment), got {p.process_id}")


def validate(config: Config) -> Config:
    """Checks every value that can be checked without the data; raises ConfigError naming the field."""
    m, d, t = config.model, config.data, config.train
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        if dataclasses.is_dataclass(value) and section.name != "train":  # validate_train checks train
            _require_finite(section.name, value)
            check_choices(section.name, value)
    _require(config.preset in PRESETS, f"preset must be one of {PRESETS}, got {config.preset!r}")
    _require(m.latent_dim >= 1, f"model.latent_dim must be >= 1, got {m.latent_dim}")
    _require(m.conv_kernel >= 1, f"model.conv_kernel must be >= 1, got {m.conv_kernel}")
    _require(
        bool(m.resnet_widths) and all(w >= 1 for w in m.resnet_widths),
        f"model.resnet_widths must be one or more positive widths, got {m.resnet_widths}",
    )
    _require(m.resnet_blocks >= 0, f"model.resnet_blocks must be >= 0, got {m.resnet_blocks}")
    _require(
        not (m.architecture != "mlp" and m.learn_scale),
        "model.learn_scale=true is for the mlp architecture; resnet and hvae take a fixed gaussian_scale",
    )
    _require(not (m.remat and m.architecture == "mlp"), "model.remat=true needs model.architecture=resnet or hvae")
    _require(m.iaf_steps >= 1, f"model.iaf_steps must be >= 1, got {m.iaf_steps}")
    _require(m.iaf_hidden >= m.latent_dim, f"model.iaf_hidden must be >= model.latent_dim, got {m.iaf_hidden}")
    _require(m.hvae_groups >= 1, f"model.hvae_groups must be >= 1, got {m.hvae_groups}")
    _require(m.hvae_latent_channels >= 1, f"model.hvae_latent_channels must be >= 1, got {m.hvae_latent_channels}")
    if m.architecture == "vqvae":
        _require(m.kind == "vae", "model.architecture=vqvae is unconditional: use model.kind=vae (--model vae)")
        _require(
            m.prior == "standard_normal" and m.posterior == "diagonal_gaussian",
            "model.architecture=vqvae has its own codes: leave model.prior and model.posterior at their defaults",
        )
        _require(
            t.objective == "elbo", "model.architecture=vqvae trains on its own objective: leave train.objective=elbo"
        )
        _require(
            t.grad_clip == 0 and t.skip_threshold == 0,
            "model.architecture=vqvae updates its codebook through the optimizer: train.grad_clip and "
            "train.skip_threshold must be 0",
        )
        _require(m.codebook_size >= 2, f"model.codebook_size must be >= 2, got {m.codebook_size}")
        _require(0.0 <= m.codebook_decay < 1.0, f"model.codebook_decay must lie in [0, 1), got {m.codebook_decay}")
        _require(m.commitment >= 0, f"model.commitment must be >= 0, got {m.commitment}")
        _require(
            bool(m.vq_widths) and all(w >= 1 for w in m.vq_widths),
            f"model.vq_widths must be one or more positive widths, got {m.vq_widths}",
        )
    if m.architecture == "hvae":
        _require(
            m.prior == "standard_normal",
            "model.architecture=hvae learns its own hierarchical prior: leave model.prior=standard_normal",
        )
        _require(
            t.objective == "elbo",
            "model.architecture=hvae trains on the ELBO (train.objective=elbo); iwae and hybrid are single-latent",
        )
    for name in ("encoder_conv", "encoder_hidden", "decoder_hidden", "decoder_conv"):
        sizes = getattr(m, name)
        _require(all(s >= 1 for s in sizes), f"model.{name} sizes must be >= 1, got {sizes}")
    _require(m.encoder_conv_stride in (1, 2), f"model.encoder_conv_stride must be 1 or 2, got {m.encoder_conv_stride}")
    _require(
        m.condition_site in ("input", "head"),
        f"model.condition_site must be 'input' or 'head', got {m.condition_site!r}",
    )
    _require(m.gaussian_scale > 0, f"model.gaussian_scale must be > 0, got {m.gaussian_scale}")
    _require(m.logistic_mixtures >= 1, f"model.logistic_mixtures must be >= 1, got {m.logistic_mixtures}")
    _require(
        not (m.learn_scale and m.likelihood != "gaussian"), "model.learn_scale=true needs model.likelihood=gaussian"
    )
    _require(
        d.source not in ("npz", "idx") or bool(d.path),
        f"data.source={d.source} needs data.path (a .npz file or a folder of IDX files)",
    )
    _require(d.source != "tfds" or bool(d.name), "data.source=tfds needs data.name, e.g. data.name=mnist")
    _require(d.num_train >= 0, f"data.num_train must be >= 0 (0 = all), got {d.num_train}")
    _require(d.window >= 1 and d.stride >= 1, f"data.window and data.stride must be >= 1, got {d.window}, {d.stride}")
    _require(
        not (d.test_path and d.source != "series"),
        "data.test_path is the test series' CSV: it needs data.source=series",
    )
    _require(
        0.0 <= d.validation < 1.0, f"data.validation must be a share of the training data in [0, 1), got {d.validation}"
    )
    _require(
        not (d.validation_split and d.source != "tfds"),
        "data.validation_split names a TFDS split: it needs data.source=tfds (else use data.validation=SHARE)",
    )
    _require(
        not (config.train.early_stopping_patience and not (d.validation or d.validation_split)),
        "train.early_stopping_patience reads validation data: set data.validation (e.g. 0.1) or data.validation_split",
    )
    _require(not (d.binarize and m.likelihood != "bernoulli"), "data.binarize=true needs model.likelihood=bernoulli")
    _require(m.prior_components >= 1, f"model.prior_components must be >= 1, got {m.prior_components}")
    _require(m.flow_layers >= 1, f"model.flow_layers must be >= 1, got {m.flow_layers}")
    _require(
        not (m.prior == "vamp" and m.kind == "cvae"),
        "model.prior=vamp needs model.kind=vae "
        "(pseudo-inputs carry no condition); for a CVAE use model.prior=conditional",
    )
    _require(not (m.prior == "conditional" and m.kind != "cvae"), "model.prior=conditional needs model.kind=cvae")
    _require(not (t.objective == "hybrid" and m.kind != "cvae"), "train.objective=hybrid needs model.kind=cvae")
    RunConfig.validate(config)
    return config


def validate_checkpoint(c: CheckpointConfig) -> None:
    """Checks the checkpoint section; raises ConfigError naming the field."""
    _require_finite("checkpoint", c)
    _require(c.every_epochs >= 0, f"checkpoint.every_epochs must be >= 0 (0 = only at the end), got {c.every_epochs}")
    _require(c.every_steps >= 0, f"checkpoint.every_steps must be >= 0 (0 = off), got {c.every_steps}")
    _require(c.keep >= 1, f"checkpoint.keep must be >= 1, got {c.keep}")
