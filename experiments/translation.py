"""Translation and style swap with a CVAE: encode under the source label, decode under the target.

Measured on the 1,000 test digits, each translated to the 9 other classes:
  - target accuracy: the share of translations an independent CNN assigns to the target class;
  - latent cycle consistency: |z - z'| (z' re-encodes the translation under its new label), against
    |z_i - z_j| for random pairs of test digits;
  - ink preservation: correlation of total ink (a stroke-width proxy) between each input and its
    translations, against inputs paired with other digits' translations.
Style swap: the latent of digit A, the label of digit B -> A's handwriting writing B's class.

    python experiments/translation.py [--workdir runs/quickstart] [--seeds 0 1 2]

Seed S uses the run of conditional_generation.py's seed S (--workdir for seed 0, --workdir_seed<S>
otherwise), training it if it is not there; the judge is trained once (seed 0).
Writes experiments/results/translation.json (each seed's numbers and their spread), translation.png
and style_swap.png (seed 0's run).
"""

import argparse
import dataclasses

import _shared
import numpy as np

from cvae_jax.apps import plots, translate
from cvae_jax.config import get_config
from cvae_jax.data import images as data
from cvae_jax.training import checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/quickstart")
    _shared.add_seed_arguments(parser)
    parser.add_argument(
        "--prefix", default="", help="put before the names of the files written (e.g. fashion_ for a Fashion-MNIST run)"
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="score the test digits (to report) or each run's validation hold-out (to choose settings on); "
        "validation writes <prefix>translation_validation.json and no pictures",
    )
    parser.add_argument("--epochs", type=int, help="train.epochs of runs this script trains (default: the config's)")
    args = parser.parse_args()

    seeds = _shared.seeds_of(args)
    base = _shared.load_run(args.workdir).config if checkpoint.has_checkpoint(args.workdir) else get_config("cvae")
    if args.epochs:
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=args.epochs))
    dataset = data.load(base.data)
    classes = dataset.num_classes
    judge = _shared.judge(dataset, 0)

    def measure(seed: int) -> dict:
        workdir = _shared.seed_workdir(args.workdir, seed)
        run = _shared.trained(dataclasses.replace(base, seed=seed), workdir)
        if args.split == "validation":  # the digits this seed's run held out (data.validation)
            held = data.hold_out(dataset, run.config.data.validation, seed).validation
            if held is None:
                raise SystemExit(f"{workdir} held out no validation data (data.validation=0)")
            x, y = held.images, held.labels
        else:
            x, y = dataset.test.images, dataset.test.labels
        result = translation_scores(run, judge, x, y, classes, seed)
        if seed == seeds[0] and args.split == "test":
            pictures(run, x, y, classes, args.prefix)
        return {"workdir": workdir, "checkpoint_step": run.step, "split": args.split, **result}

    suffix = "_validation" if args.split == "validation" else ""
    _shared.over_seeds(args.prefix + "translation" + suffix, seeds, measure, epochs=base.train.epochs)


def translation_scores(run, judge, x, y, classes: int, seed: int) -> dict:
    n = len(x)

    sources = np.repeat(y, classes - 1)
    targets = (sources + np.tile(np.arange(1, classes), n)) % classes
    inputs = np.repeat(x, classes - 1, axis=0)
    moved = np.asarray(translate.translate(run.model, run.params, inputs, sources, targets, classes))
    accuracy = judge.predict(moved) == targets
    cycle, random = translate.cycle_distances(run.model, run.params, inputs, sources, targets, classes, seed=seed)
    ink_in, ink_out = inputs.reshape(len(inputs), -1).sum(1), moved.reshape(len(moved), -1).sum(1)
    shuffled = np.random.default_rng(seed).permutation(len(moved))

    rng = np.random.default_rng(seed + 1)
    partner = rng.permutation(n)
    partner = np.where(y[partner] == y, np.roll(partner, 1), partner)  # a digit of (almost always) another class
    swapped = np.asarray(translate.style_swap(run.model, run.params, x, y, y[partner], classes))
    keep = y[partner] != y

    per_class = [float(accuracy[targets == k].mean()) for k in range(classes)]
    return {
        "num_translations": int(len(moved)),
        "target_accuracy": float(accuracy.mean()),
        "target_accuracy_by_target_class": np.round(per_class, 3).tolist(),
        "source_class_retained": float(np.mean(judge.predict(moved) == sources)),
        "cycle_distance_median": float(np.median(cycle)),
        "random_pair_distance_median": float(np.median(random)),
        "cycle_over_random": float(np.median(cycle) / np.median(random)),
        "ink_correlation_input_vs_translation": float(np.corrcoef(ink_in, ink_out)[0, 1]),
        "ink_correlation_shuffled_pairs": float(np.corrcoef(ink_in, ink_out[shuffled])[0, 1]),
        "style_swap_accuracy_as_content_class": float(np.mean(judge.predict(swapped[keep]) == y[partner][keep])),
        "style_swap_pairs": int(keep.sum()),
    }


def pictures(run, x, y, classes: int, prefix: str) -> None:
    rows = [int(np.flatnonzero(y == k)[0]) for k in range(classes)]  # the first test digit of each class
    grid = np.asarray(translate.translation_grid(run.model, run.params, x[rows], y[rows], classes))
    picture = np.concatenate([x[rows][:, None], grid], axis=1).reshape(-1, *x.shape[1:])
    plots.save_grid(
        _shared.picture(prefix + "translation"),
        picture,
        classes,
        classes + 1,
        title="column 1: input; then translated to classes 0-9",
        row_labels=[str(k) for k in y[rows]],
    )
    styles, contents = x[rows[:6]], x[[int(np.flatnonzero(y == k)[1]) for k in range(classes)]]
    swap = [
        translate.style_swap(run.model, run.params, styles, y[rows[:6]], np.full(6, k), classes) for k in range(classes)
    ]
    swap = np.stack([np.asarray(s) for s in swap], axis=1)  # [style, content class]
    picture = np.concatenate(
        [np.concatenate([np.ones_like(x[:1]), contents])[None], np.concatenate([styles[:, None], swap], axis=1)]
    ).reshape(-1, *x.shape[1:])
    plots.save_grid(
        _shared.picture(prefix + "style_swap"),
        picture,
        7,
        classes + 1,
        title="top row: content digits; rows: a style (column 1) writing each content class",
    )


if __name__ == "__main__":
    main()
