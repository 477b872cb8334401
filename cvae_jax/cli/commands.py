"""The `cvae-jax` command line. Only this module parses arguments; it calls the library and nothing else."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def _train(args) -> int:
    if args.task not in (None, "images", "series"):
        return _train_task(args)
    from cvae_jax.config import ConfigError, apply_overrides, get_config
    from cvae_jax.training import parallel

    config = _saved_config(args.workdir) if args.model is None and args.preset is None else None
    resuming = config is not None
    if config is None:  # --task series: windows of a series, the series preset's model (a VAE by default)
        series = args.task == "series"
        config = get_config(
            args.model or ("vae" if series else "cvae"), args.preset or ("series" if series else "default")
        )
    config = apply_overrides(config, _overrides(args, _TRAIN_FLAGS))
    if args.task == "series" and config.data.source != "series":
        raise ConfigError("--task series trains on windows of a series: keep data.source=series")
    parallel.initialize(config.parallel)  # before anything touches the devices

    import jax

    from cvae_jax.tasks.images import train_and_evaluate

    primary = parallel.is_primary()
    devices = parallel.make_layout(config.parallel).num_shards  # refuses a device count this machine lacks
    if primary:
        print(
            f"{'resuming' if resuming else 'training'} {config.model.kind} ({config.preset} preset) on "
            f"{config.data.source} data, "
            f"{config.parallel.mode} over {devices} {jax.default_backend()} device(s) in "
            f"{jax.process_count()} process(es) -> {args.workdir}",
            file=sys.stderr,
        )
    run = train_and_evaluate(config, args.workdir, progress=not args.no_progress)
    final = [e for e in run.history if e["split"] == "test"][-1]
    if primary:
        print(
            f"done: test neg_elbo {final['neg_elbo']:.2f} nats (recon {final['recon']:.2f}, kl {final['kl']:.2f}); "
            f"metrics, pictures and checkpoint in {args.workdir}"
        )
    return 0


def _overrides(args, flags) -> list[str]:
    """`field=value` for every (flag, field) pair whose flag was given, then the --set overrides."""
    given = [(field, getattr(args, flag)) for flag, field in flags if getattr(args, flag, None) is not None]
    return [f"{field}={value}" for field, value in given] + list(args.set)


def _train_task(args) -> int:
    """`cvae-jax train --task NAME`: any task but images, configured by its presets and --set."""
    from cvae_jax import tasks
    from cvae_jax.config import ConfigError
    from cvae_jax.training import parallel
    from cvae_jax.training.trainer import fit

    task_class = tasks.resolve(args.task)
    if args.model is not None:
        raise ConfigError(f"--model is for --task images; {args.task} is configured with --preset and --set")
    saved = _saved_meta(args.workdir) if args.preset is None else None
    overrides = _overrides(args, _TRAIN_FLAGS)
    if saved is not None:
        from cvae_jax.config import apply_overrides

        config = apply_overrides(task_class.read_config(saved["config"]), overrides)
    else:
        config = task_class.make_config(args.preset or "default", overrides)
    parallel.initialize(config.parallel)  # before anything touches the devices
    parallel.make_layout(config.parallel)  # refuses a device count this machine lacks before the data load
    primary = parallel.is_primary()
    task = task_class.from_config(config)
    if primary:
        print(f"{'resuming' if saved else 'training'} task {task.name} -> {args.workdir}", file=sys.stderr)
    fitted = fit(task, args.workdir, progress=primary and not args.no_progress)
    if primary:
        final = [e for e in fitted.history if e["split"] == "test"][-1]
        terms = ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k not in ("epoch", "split", "step"))
        print(f"done: test {terms}; checkpoints and metrics.jsonl in {args.workdir}")
    return 0


# (command-line flag, config field) pairs of `cvae-jax train`.
_TRAIN_FLAGS = (
    ("epochs", "train.epochs"),
    ("batch_size", "train.batch_size"),
    ("devices", "parallel.num_devices"),
    ("parallel", "parallel.mode"),
    ("per_device_batch_size", "parallel.per_device_batch_size"),
    ("coordinator", "parallel.coordinator_address"),
    ("num_processes", "parallel.num_processes"),
    ("process_id", "parallel.process_id"),
)


def _saved_meta(workdir: str) -> dict | None:
    """The latest checkpoint's meta (config, task) of the run already in `workdir`, or None."""
    from cvae_jax.training import checkpoint

    if not checkpoint.has_checkpoint(workdir):
        return None
    with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
        return ckpts.read_meta(ckpts.latest_step())


def _saved_config(workdir: str):
    """The image config of the run already in `workdir` (to resume it), or None if there is none."""
    from cvae_jax.config import from_dict

    meta = _saved_meta(workdir)
    return None if meta is None else from_dict(meta["config"])


def _sample(args) -> int:
    import jax

    from cvae_jax.apps import inference
    from cvae_jax.training.step import SAMPLE, purpose_key

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    out = _output_file(args.out)
    run = _image_run(args)
    model, params, config, num_classes = run.model, run.params, run.config, int(run.meta["num_classes"])
    if args.label is not None and not 0 <= args.label < num_classes:
        raise ValueError(f"--label {args.label} is out of range: this model knows classes 0..{num_classes - 1}")
    seed = config.seed if args.seed is None else args.seed
    condition = inference.condition_for(model, args.label, num_classes, args.num)
    if args.code_prior:
        images = _code_prior_draws(args, seed)
    elif args.sampler == "gmm":
        z = _gmm_latents(args, run, seed)
        images = inference.decode_mean(model, params, z, condition)
    else:
        key = jax.random.fold_in(purpose_key(seed, SAMPLE), 7919)
        images = inference.sample(model, params, key, args.num, condition)
    images = _save(out, images)
    print(f"saved {images.shape} samples{'' if args.label is None else f' of class {args.label}'} to {out}")
    return 0


def _image_run(args):
    """The image model of --workdir (at --checkpoint) or of --pretrained, as `tasks.images.Loaded`."""
    from cvae_jax.tasks.images import Loaded, load_run

    if getattr(args, "pretrained", None) is None:
        return load_run(args.workdir, args.checkpoint)
    from cvae_jax.apps.pretrained import from_pretrained

    found = from_pretrained(args.pretrained)
    if found.task != "images":
        raise ValueError(f"--pretrained {args.pretrained} is a {found.task} model (for molecules: sample-molecules)")
    return Loaded(found.model, found.params, found.config, found.meta, found.meta["step"])


def _molecule_model(args):
    """(model, params, data) of the molecule model of --workdir (at --checkpoint) or of --pretrained."""
    from cvae_jax import molecules

    if getattr(args, "pretrained", None) is None:
        return molecules.load(args.workdir, args.checkpoint)
    from cvae_jax.apps.pretrained import from_pretrained

    found = from_pretrained(args.pretrained)
    if found.task != "molecules":
        raise ValueError(f"--pretrained {args.pretrained} is a {found.task} model, not a molecule model")
    return found.model, found.params, found.data


def _needs_workdir(args, what: str) -> None:
    if args.workdir is None:
        raise ValueError(f"{what} writes or reads files beside a run: give --workdir, not --pretrained")


def _code_prior_draws(args, seed: int):
    """args.num images from the VQ-VAE in args.workdir, its codes drawn by the prior in args.code_prior."""
    import jax

    from cvae_jax.tasks import code_prior

    _needs_workdir(args, "--code-prior")
    prior, prior_params, prior_cfg, vq = code_prior.load_prior(args.code_prior)
    if Path(prior_cfg.data.vqvae).resolve() != Path(args.workdir).resolve():
        raise ValueError(f"--code-prior {args.code_prior} was trained on {prior_cfg.data.vqvae}, not on {args.workdir}")
    return code_prior.draw(vq, prior, prior_params, jax.random.key(seed), args.num)


def _gmm_latents(args, run, seed: int):
    """args.num latents from the Gaussian mixture fitted to the run's training codes (fitted once, saved
    in the run directory)."""
    from cvae_jax.apps import inference, samplers
    from cvae_jax.data import images as data_lib

    inference._single_latent(run.model, "--sampler gmm")
    _needs_workdir(args, "--sampler gmm")
    fit_path = samplers.gmm_path(args.workdir, args.components, run.step)
    if fit_path.exists():
        fit = samplers.gmm_for_run(args.workdir, run, None, components=args.components)
    else:
        dataset = data_lib.hold_out(data_lib.load(run.config.data), run.config.data.validation, run.config.seed)
        labels = dataset.train.labels if run.model.conditional else None
        condition = inference.condition_for(run.model, labels, dataset.num_classes, len(dataset.train.images))
        fit = samplers.gmm_for_run(args.workdir, run, dataset.train.images, condition, components=args.components)
        print(
            f"fitted a {args.components}-component Gaussian mixture to the training codes: {fit_path}", file=sys.stderr
        )
    return samplers.sample_gmm(fit, seed, args.num)


def _evaluate(args) -> int:
    from cvae_jax.apps import evaluate
    from cvae_jax.data import images as data

    for flag, value in (
        ("--num-importance-samples", args.num_importance_samples),
        ("--chunk", args.chunk),
        ("--num-examples", args.num_examples),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    out = _output_file(args.out) if args.out else None
    if out is None and args.workdir is None:
        raise ValueError("with --pretrained, say where the evaluation goes: --out FILE.json")
    run = _image_run(args)
    model, params, config = run.model, run.params, run.config
    if args.disentanglement:
        from cvae_jax.apps import disentanglement

        result = disentanglement.evaluate_run(model, params, config, args.sizes, args.seed)
        result["checkpoint_step"] = run.step
        return _write_json(result, out or Path(args.workdir) / "disentanglement.json")
    dataset = data.load(config.data)
    # evaluate_model rejects a chunk that does not divide K before any sampling starts.
    result = evaluate.evaluate_model(
        model,
        params,
        config,
        dataset,
        num_importance_samples=args.num_importance_samples,
        chunk=args.chunk,
        num_examples=args.num_examples,
        seed=args.seed,
    )
    return _write_json(result, out or Path(args.workdir) / "evaluation.json")


def _write_json(result: dict, out: Path) -> int:
    import json

    text = json.dumps(result, indent=2)
    print(text)
    _write(out, (text + "\n").encode())
    print(f"written to {out}", file=sys.stderr)
    return 0


def _read_images(path: str, what: str = "--input") -> np.ndarray:
    """Images from a .npy file ([N, H, W] or [N, H, W, C]; uint8 0-255 or float 0-1), validated."""
    from cvae_jax.data.images import DataError, as_split

    if not Path(path).exists():
        raise FileNotFoundError(f"{what} file {path!r} does not exist")
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {what} {path!r} as a .npy array: {e}") from e
    return as_split(images, np.zeros(len(images), np.int32), f"{what} {path}").images


def _read_labels(value: str | None, num: int, what: str):
    """An integer, or a .npy file of integers, or None."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    if not Path(value).exists():
        raise FileNotFoundError(f"{what} {value!r} is neither an integer nor an existing .npy file")
    return np.load(value, allow_pickle=False)


def _output_file(path: str, what: str = "--out") -> Path:
    """The file a command will write, checked before any work is done: not an existing directory, and
    its folder exists or can be made."""
    from cvae_jax.training.checkpoint import file_in_the_way

    out = Path(path)
    if out.is_dir():
        raise ValueError(f"{what} {path!r} is a directory; name a file in it, e.g. {str(out / 'out.npy')!r}")
    blocker = file_in_the_way(out.parent)
    if blocker is not None:
        raise ValueError(f"{what} {path!r} cannot be written: {str(blocker)!r} is a file, not a folder")
    return out


def _write(out: Path, content: bytes) -> None:
    """Writes exactly `out` (creating its folder), atomically: no reader, and no interrupted write, ever
    leaves a partial file; an existing file is replaced only once the new one is complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _npy_bytes(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _save(out: Path, images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.shape[-1] == 1:
        images = images[..., 0]
    _write(out, _npy_bytes(images))
    return images


def _translate(args) -> int:
    from cvae_jax.apps import translate

    out_file = _output_file(args.out)
    run = _image_run(args)
    num_classes = int(run.meta["num_classes"])
    images = _read_images(args.input)
    source = _read_labels(args.source_label, len(images), "--source-label")
    target = _read_labels(args.target_label, len(images), "--target-label")
    out = translate.translate(run.model, run.params, images, source, target, num_classes)
    saved = _save(out_file, out)
    print(f"saved {saved.shape} translations to {out_file}")
    return 0


def _score(args) -> int:
    import json

    from cvae_jax.apps import anomaly
    from cvae_jax.data import images as data

    out = _output_file(args.out)
    summary_file = out.with_suffix(".json") if out.suffix != ".json" else out.with_name(out.name + ".json")
    run = _image_run(args)
    num_classes = int(run.meta["num_classes"])
    options = dict(kind=args.kind, num_classes=num_classes, num_samples=args.num_samples, seed=args.seed)
    images = _read_images(args.input)
    labels = _read_labels(args.labels, len(images), "--labels")
    result = anomaly.scores(run.model, run.params, images, labels, **options)
    summary = {
        "kind": args.kind,
        "num_samples": args.num_samples if args.kind == "nll" else None,
        "num_inputs": len(result),
        "checkpoint_step": run.step,
    }
    if args.fpr is not None:  # calibrate on held-out normal data: --normal, else the run's test split
        if args.normal:
            normal = _read_images(args.normal, "--normal")
            normal_labels = _read_labels(args.normal_labels, len(normal), "--normal-labels")
        else:
            test = data.load(run.config.data).test
            normal, normal_labels = test.images, test.labels if run.model.conditional else None
        threshold = anomaly.calibrate_threshold(
            anomaly.scores(run.model, run.params, normal, normal_labels, **options), args.fpr
        )
        summary.update(
            fpr=args.fpr,
            threshold=threshold,
            calibrated_on=args.normal or "the run's test split",
            flagged=int(np.sum(result > threshold)),
        )
    _write(out, _npy_bytes(result))
    _write(summary_file, (json.dumps(summary, indent=2) + "\n").encode())
    print(json.dumps(summary))
    print(f"saved {len(result)} scores to {out} (summary: {summary_file})", file=sys.stderr)
    return 0


# (command-line flag, config field) pairs of `cvae-jax train-molecules`: its flags are names for
# fields of the molecule config (cvae_jax.molecules.config), the same that `--set` reaches.
_MOLECULE_FLAGS = (
    ("train_csv", "data.train_path"),
    ("test_csv", "data.test_path"),
    ("num_train", "data.num_train"),
    ("num_test", "data.num_test"),
    ("num_validation", "data.num_validation"),
    ("properties", "data.properties"),
    ("representation", "data.representation"),
    ("latent_dim", "model.latent_dim"),
    ("decoder_hidden", "model.decoder_hidden"),
    ("decoder_layers", "model.decoder_layers"),
    ("grammar_features", "model.grammar_features"),
    ("word_dropout", "model.word_dropout"),
    ("epochs", "train.epochs"),
    ("beta", "train.beta"),
    ("free_bits", "train.free_bits"),
    ("seed", "seed"),
    ("devices", "parallel.num_devices"),
    ("parallel", "parallel.mode"),
)


def _train_molecules(args) -> int:
    from cvae_jax import molecules
    from cvae_jax.training import parallel

    cfg = molecules.make_config(args.preset, _overrides(args, _MOLECULE_FLAGS))
    parallel.initialize(cfg.parallel)  # before anything touches the devices
    parallel.make_layout(cfg.parallel)  # refuses a device count this machine lacks before the data are prepared
    primary = parallel.is_primary()
    data = molecules.prepare(cfg)
    if primary:
        names = cfg.data.properties
        print(
            f"training a {cfg.data.representation.upper()} "
            f"{'CVAE on ' + ', '.join(names) if names else 'VAE'}: "
            f"{len(data.train_smiles)} train / {len(data.validation_smiles)} validation / "
            f"{len(data.test_smiles)} test molecules, {data.vocab.size} tokens, length {data.length} -> "
            f"{args.workdir}",
            file=sys.stderr,
        )
    _, _, history = molecules.train(cfg, data, workdir=args.workdir, progress=primary and not args.no_progress)
    if primary:
        final = [e for e in history if e["split"] == "test"][-1]
        print(
            f"done: test -ELBO {final['neg_elbo']:.2f} nats/molecule (recon {final['recon']:.2f}, KL "
            f"{final['kl']:.2f}); checkpoints and metrics.jsonl in {args.workdir}; draw with: cvae-jax "
            f"sample-molecules --workdir {args.workdir} --out samples.smi",
            file=sys.stderr,
        )
    return 0


def _export(args) -> int:
    from cvae_jax.apps.pretrained import export

    which = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    out = export(args.workdir, args.out, which, name=args.name, results=args.results)
    print(f"wrote the model folder {out} (weights, config, model card README.md)")
    return 0


def _sample_molecules(args) -> int:
    import jax

    from cvae_jax import molecules

    targets = {}
    for item in args.property:
        name, _, value = item.partition("=")
        try:
            targets[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--property takes NAME=NUMBER (e.g. logp=3.0), got {item!r}") from None
    out = _output_file(args.out)
    model, params, data = _molecule_model(args)
    if targets and not model.conditional:
        raise ValueError("this molecule model is unconditional: it takes no --property")
    condition = data.condition_for(targets, args.num) if model.conditional else None
    drawn = molecules.generate(
        model,
        params,
        jax.random.key(args.seed),
        condition,
        data.vocab,
        num=args.num,
        temperature=args.temperature,
        constrained=args.constrained,
        guidance=args.guidance,
    )
    _write(out, ("\n".join(drawn) + "\n").encode())
    print(f"saved {len(drawn)} SMILES to {out} (conditioned on {targets or 'the training medians'})", file=sys.stderr)
    return 0


def _evaluate_molecules(args) -> int:
    import json

    from cvae_jax.molecules import benchmark

    out = _output_file(args.out)
    samples_out = _output_file(args.samples_out, "--samples-out") if args.samples_out else None
    found = {} if args.no_moses else benchmark.moses_files()
    files = {
        "train": args.train_csv or found.get("train"),
        "test": args.test_csv or found.get("test"),
        "test_scaffolds": args.test_scaffolds_csv or found.get("test_scaffolds"),
    }
    if args.input:
        generated, source = benchmark.read_smi(args.input), {"input": args.input}
    else:
        generated = _draw_molecules(args, files["test"])
        source = {"workdir": args.workdir, "pretrained": args.pretrained, "checkpoint": args.checkpoint}
        source["seed"] = args.seed
        source.update(temperature=args.temperature, constrained=args.constrained, guidance=args.guidance)
    if samples_out is not None:
        _write(samples_out, ("\n".join(generated) + "\n").encode())
    result = benchmark.evaluate(
        generated,
        train_csv=files["train"],
        test_csv=files["test"],
        test_scaffolds_csv=files["test_scaffolds"],
        jobs=args.jobs,
        fcd=not args.no_fcd,
    )
    result = {**source, **result}
    _write(out, (json.dumps(result, indent=2) + "\n").encode())
    print(json.dumps({k: v for k, v in result.items() if k not in ("files", "skipped")}))
    for line in result["skipped"]:
        print(f"skipped: {line}", file=sys.stderr)
    print(f"saved the metrics of {len(generated)} molecules to {out}", file=sys.stderr)
    return 0


def _draw_molecules(args, condition_csv) -> list[str]:
    """`args.num` molecules from the run in args.workdir; a conditional model is asked, for each, for
    the properties of a random molecule of `condition_csv` (MOSES's test set by default)."""
    import jax

    from cvae_jax import molecules
    from cvae_jax.data import smiles

    model, params, data = _molecule_model(args)
    condition = None
    if model.conditional:
        if condition_csv is None:
            raise ValueError(
                "a conditional model needs molecules whose properties to ask for: give --test-csv (or install "
                "molsets for MOSES's test set)"
            )
        condition = data.conditions_like(smiles.load_csv(condition_csv), args.num, args.seed)
    return molecules.generate(
        model,
        params,
        jax.random.key(args.seed),
        condition,
        data.vocab,
        num=args.num,
        temperature=args.temperature,
        constrained=args.constrained,
        guidance=args.guidance,
        batch=args.batch,
    )


def _sampling_arguments(parser) -> None:
    """How sample-molecules and evaluate-molecules draw: temperature, constraint, guidance."""
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy")
    parser.add_argument(
        "--constrained",
        action="store_true",
        help="constrained sampling: every string is grammatical SMILES within the atoms' valences "
        "(aromatic rings are not checked: train with --representation kekule for none)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        help="conditional models: guidance weight w, each step's logits l(c) + w (l(c) - l(mean properties)); "
        "0 (the default) draws from the model as trained",
    )


def _model_source(parser) -> None:
    """--workdir RUN or --pretrained NAME_OR_DIR, one of them required."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a run directory")
    source.add_argument(
        "--pretrained",
        metavar="NAME_OR_DIR",
        help="a shipped model (e.g. digits-cvae, moses-cvae), a folder written by cvae-jax export, or a Hugging "
        "Face Hub id org/name (the [hub] extra)",
    )


def make_parser() -> argparse.ArgumentParser:
    from cvae_jax.config import MODELS, PARALLEL_MODES, PRESETS
    from cvae_jax.data.smiles import REPRESENTATIONS
    from cvae_jax.molecules.config import PRESETS as MOLECULE_PRESETS
    from cvae_jax.molecules.config import MoleculeConfig

    parser = argparse.ArgumentParser(prog="cvae-jax", description="Train and use VAEs and CVAEs in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and write metrics, pictures and a checkpoint")
    train.add_argument(
        "--task",
        metavar="NAME",
        help="what to train: images (the default), series (sliding windows of a CSV series: --set data.path=... "
        "--set data.test_path=...), molecules, code_prior, or your own Task subclass as package.module:Class or "
        "FILE.py:Class; every task is configured by --preset and --set",
    )
    train.add_argument("--model", choices=MODELS, help="images: vae or cvae (default: cvae, or the saved run's)")
    train.add_argument(
        "--preset",
        help=f"a named starting config of the task (images: {', '.join(PRESETS)}; 'default', the default, is a "
        "512-512 MLP, latent 16; 'article': the article's architecture; 'resnet': a ResNet VAE with a discretized "
        f"logistic mixture likelihood for 8-bit (colour) images; molecules: {', '.join(MOLECULE_PRESETS)})",
    )
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int, help="global batch, split over the devices")
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--workdir",
        default="runs/quickstart",
        help="run directory (default: %(default)s); if it holds a run, that run is resumed",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any config field, e.g. --set model.latent_dim=32 --set data.source=npz",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    par = train.add_argument_group("devices and hosts")
    par.add_argument("--devices", type=int, help="local devices to use (default: all)")
    par.add_argument(
        "--parallel", choices=PARALLEL_MODES, help="sharded jit over a device mesh (default), pmap, or one device"
    )
    par.add_argument("--per-device-batch-size", type=int, help="global batch = this x devices")
    par.add_argument("--coordinator", help="multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS)")
    par.add_argument("--num-processes", type=int, help="multi-host: number of processes (or JAX_NUM_PROCESSES)")
    par.add_argument("--process-id", type=int, help="multi-host: this process's index (or JAX_PROCESS_ID)")
    train.set_defaults(func=_train)

    sample = commands.add_parser("sample", help="draw images from a trained model")
    _model_source(sample)
    sample.add_argument("--checkpoint", default="latest", help="latest (default), best, or a step number")
    sample.add_argument("--num", type=int, default=16)
    sample.add_argument("--label", type=int, help="class to generate (CVAE only)")
    sample.add_argument("--seed", type=int, help="noise seed (default: the run's seed)")
    sample.add_argument(
        "--sampler",
        choices=("prior", "gmm"),
        default="prior",
        help="where z comes from: the model's prior (default), or a Gaussian mixture fitted to the "
        "aggregate posterior of the training codes (fitted once, saved in the run directory's samplers/)",
    )
    sample.add_argument("--components", type=int, default=10, help="--sampler gmm: mixture components")
    sample.add_argument(
        "--code-prior",
        metavar="DIR",
        help="a VQ-VAE's codes drawn by the autoregressive prior trained in DIR (cvae-jax train --task code_prior)",
    )
    sample.add_argument("--out", required=True, help="output .npy file: float32 [N, H, W] (or [N, H, W, C]) in [0, 1]")
    sample.set_defaults(func=_sample)

    evaluate = commands.add_parser("evaluate", help="test ELBO, importance-sampled NLL, bits/dim, active units, MI")
    _model_source(evaluate)
    evaluate.add_argument("--checkpoint", default="latest", help="latest (default), best, or a step number")
    evaluate.add_argument("--num-importance-samples", type=int, default=1000, help="K (up to 5,000 and more)")
    evaluate.add_argument(
        "--chunk",
        type=int,
        default=20,
        help="importance samples decoded per scan step (bounds memory; small chunks keep the decoder outputs in cache)",
    )
    evaluate.add_argument("--num-examples", type=int, help="evaluate the first N test examples (default: all)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--disentanglement",
        action="store_true",
        help="instead: the disentanglement metrics (BetaVAE, FactorVAE, MIG, DCI, SAP, modularity, explicitness) "
        "of a VAE trained on data.source=sprites; written to <workdir>/disentanglement.json",
    )
    evaluate.add_argument(
        "--sizes",
        default="paper",
        help="with --disentanglement: disentanglement_lib's sample sizes (paper), a tenth of them (cpu), "
        "or another fraction of them (e.g. 0.01)",
    )
    evaluate.add_argument("--out", help="JSON output (default: <workdir>/evaluation.json)")
    evaluate.set_defaults(func=_evaluate)

    translate = commands.add_parser("translate", help="CVAE: redraw images under another condition, keeping the style")
    _model_source(translate)
    translate.add_argument("--checkpoint", default="latest", help="latest (default), best, or a step number")
    translate.add_argument("--input", required=True, help=".npy images [N, H, W] (uint8 or float in [0, 1])")
    translate.add_argument("--source-label", required=True, help="the inputs' class: an integer or a .npy of N ints")
    translate.add_argument(
        "--target-label",
        required=True,
        help="class to translate to: an integer or a .npy of N ints (another image's labels: a style swap)",
    )
    translate.add_argument("--out", required=True, help="output .npy: float32 [N, H, W] in [0, 1]")
    translate.set_defaults(func=_translate)

    score = commands.add_parser("score", help="anomaly scores (higher = more anomalous) and a calibrated threshold")
    _model_source(score)
    score.add_argument("--checkpoint", default="latest", help="latest (default), best, or a step number")
    score.add_argument("--input", required=True, help=".npy inputs [N, H, W] (uint8 or float in [0, 1])")
    score.add_argument("--labels", help="CVAE: the inputs' class, an integer or a .npy of N ints")
    score.add_argument(
        "--kind",
        choices=("nll", "neg_elbo", "recon"),
        default="nll",
        help="importance-sampled -log p(x) (default), -ELBO, or squared reconstruction error",
    )
    score.add_argument("--num-samples", type=int, default=100, help="importance samples K for --kind nll")
    score.add_argument("--fpr", type=float, help="calibrate a threshold flagging this share of normal data")
    score.add_argument("--normal", help="held-out normal .npy to calibrate on (default: the run's test split)")
    score.add_argument("--normal-labels", help="CVAE: labels of --normal (integer or .npy)")
    score.add_argument("--seed", type=int, default=0)
    score.add_argument("--out", required=True, help="output .npy of float64 [N] scores; a .json summary beside it")
    score.set_defaults(func=_score)

    exp = commands.add_parser(
        "export", help="write a run as a self-contained model folder: weights, config, model card"
    )
    exp.add_argument("--workdir", required=True)
    exp.add_argument("--out", required=True, help="a new folder")
    exp.add_argument(
        "--checkpoint",
        default="best",
        help="best (default; latest for a run without validation data), latest, or a step",
    )
    exp.add_argument("--name", help="the model's name in its card (default: the folder's name)")
    exp.add_argument(
        "--results",
        help="an experiment's results file (experiments/results/*.json) that measured this run: the card quotes it",
    )
    exp.set_defaults(func=_export)

    tm = commands.add_parser(
        "train-molecules",
        help="train a SMILES CVAE conditioned on molecular properties "
        '(RDKit: pip install -e ".[chem]"); resumes a run in --workdir',
    )
    default = MoleculeConfig()  # the defaults the help names: the "default" preset's
    tm.add_argument(
        "--train-csv",
        help="training SMILES: a CSV (optionally .gz) with a SMILES column (default: MOSES's train split, "
        "from the molsets wheel)",
    )
    tm.add_argument("--test-csv", help="held-out SMILES, the same format (default: MOSES's test split)")
    tm.add_argument(
        "--workdir",
        required=True,
        help="Orbax checkpoints after every epoch; a workdir holding a run "
        "of the same settings resumes it (a larger --epochs trains it on), one of other settings is refused",
    )
    tm.add_argument(
        "--preset",
        choices=sorted(MOLECULE_PRESETS),
        default="default",
        help="the starting config that the flags and --set change (default: %(default)s)",
    )
    tm.add_argument("--num-train", type=int, help=f"the first N training molecules ({default.data.num_train})")
    tm.add_argument("--num-test", type=int, help=f"({default.data.num_test})")
    tm.add_argument(
        "--num-validation",
        type=int,
        help="validation molecules (for the best checkpoint): those after the first --num-train of the "
        f"training CSV; 0 = none ({default.data.num_validation})",
    )
    tm.add_argument(
        "--properties",
        help="the condition, comma-separated from logp, tpsa, mw, qed; '' trains an unconditional VAE (no "
        f"RDKit needed) ({','.join(default.data.properties)})",
    )
    tm.add_argument("--epochs", type=int, help=f"({default.train.epochs})")
    tm.add_argument(
        "--representation",
        choices=REPRESENTATIONS,
        help="the strings the model reads and writes: SMILES, Kekulé SMILES (no aromatic atoms, bond "
        f"orders explicit) or SELFIES (every string decodes to a valid molecule) ({default.data.representation})",
    )
    tm.add_argument("--latent-dim", type=int, help=f"({default.model.latent_dim})")
    tm.add_argument("--decoder-hidden", type=int, help=f"units of each decoder GRU ({default.model.decoder_hidden})")
    tm.add_argument("--decoder-layers", type=int, help=f"stacked decoder GRUs ({default.model.decoder_layers})")
    tm.add_argument(
        "--grammar-features",
        action="store_true",
        default=None,
        help="the decoder also reads the SMILES grammar's state: open branches and rings, free valence",
    )
    tm.add_argument("--beta", type=float, help=f"final KL weight, warmed up over 2 epochs ({default.train.beta})")
    tm.add_argument("--free-bits", type=float, help=f"KL floor per latent dimension, nats ({default.train.free_bits})")
    tm.add_argument(
        "--word-dropout",
        type=float,
        help=f"share of previous tokens hidden from the decoder in training ({default.model.word_dropout})",
    )
    tm.add_argument("--seed", type=int, help=f"({default.seed})")
    tm.add_argument(
        "--devices", type=int, help="local devices to use (default: all); the batch of 128 is split over them"
    )
    tm.add_argument("--parallel", choices=PARALLEL_MODES, help="(sharded)")
    tm.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any field of the molecule config, e.g. --set model.embed_dim=128 (after the flags)",
    )
    tm.add_argument("--no-progress", action="store_true", help="no progress bar")
    tm.set_defaults(func=_train_molecules)

    mol = commands.add_parser(
        "sample-molecules", help="draw SMILES from a molecule CVAE saved by cvae_jax.tasks.molecules"
    )
    _model_source(mol)
    mol.add_argument(
        "--checkpoint", default="best", help="best (default, by validation -ELBO), latest, or a step number"
    )
    mol.add_argument("--num", type=int, default=100)
    mol.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="requested property in its own units, e.g. --property logp=3.0 --property mw=350 "
        "(others: the training median)",
    )
    _sampling_arguments(mol)
    mol.add_argument("--seed", type=int, default=0)
    mol.add_argument("--out", required=True, help="output text file: one SMILES per line")
    mol.set_defaults(func=_sample_molecules)

    ev = commands.add_parser(
        "evaluate-molecules",
        help="the MOSES metrics (valid, unique@k, novelty, IntDiv, SNN, Frag, Scaf, Filters, FCD) of "
        "molecules drawn from a run, or of any .smi file",
    )
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("--workdir", help="a molecule run to draw from")
    what.add_argument("--pretrained", metavar="NAME_OR_DIR", help="a pretrained molecule model to draw from")
    what.add_argument("--input", help="a .smi file (one SMILES per line) or a CSV with a SMILES column")
    ev.add_argument("--num", type=int, default=30_000, help="molecules to draw (MOSES: 30,000)")
    ev.add_argument(
        "--checkpoint", default="best", help="best (default, by validation -ELBO), latest, or a step number"
    )
    _sampling_arguments(ev)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch", type=int, default=2000, help="molecules drawn per compiled call")
    ev.add_argument("--train-csv", help="training SMILES for novelty (default: MOSES's 1.58M, from molsets)")
    ev.add_argument("--test-csv", help="reference SMILES for SNN/Frag/Scaf/FCD (default: MOSES's test set)")
    ev.add_argument("--test-scaffolds-csv", help="second reference (default: MOSES's scaffold-test set)")
    ev.add_argument("--no-moses", action="store_true", help="do not fall back on MOSES's files from molsets")
    ev.add_argument("--no-fcd", action="store_true", help="skip FCD even when fcd_torch is installed")
    ev.add_argument("--jobs", type=int, help="processes for the RDKit work (default: the CPU count)")
    ev.add_argument("--samples-out", help="also write the drawn molecules here, one per line")
    ev.add_argument("--out", required=True, help="output .json of the metrics")
    ev.set_defaults(func=_evaluate_molecules)
    for command in commands.choices.values():
        command.add_argument(
            "--plugin",
            action="append",
            default=[],
            metavar="FILE.py|MODULE",
            help="import this file or module first: the priors, objectives and posteriors it registers can then "
            "be named in --set (repeatable)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    from cvae_jax.cli.host import keep_freed_memory

    keep_freed_memory()  # a process-wide allocator setting: made by the entry point, never on import
    args = make_parser().parse_args(argv)
    from cvae_jax import plugins
    from cvae_jax.config import ConfigError
    from cvae_jax.data.images import DataError
    from cvae_jax.training.checkpoint import CheckpointError
    from cvae_jax.training.resume import Interrupted
    from cvae_jax.training.trainer import TrainingError

    try:
        plugins.load(args.plugin)
        return args.func(args)
    except Interrupted as e:  # a checkpoint was saved; 128 + signal, as shells report a signalled job
        print(f"cvae-jax {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except (
        ConfigError,
        DataError,
        CheckpointError,
        TrainingError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
        ImportError,
    ) as e:
        print(f"cvae-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
