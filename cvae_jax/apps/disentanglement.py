"""Disentanglement metrics, with each paper's definition and disentanglement_lib's protocol
(Locatello et al. 2019: its `unsupervised_study_v1` metric configs give the sample sizes below, 20-bin
histogram discretization, and the classifiers named per metric).

Every metric takes `data` (cvae_jax.data.sprites.FactorData, or anything with `factor_sizes`,
`sample_factors(n, rng)` and `observations(factors)`), `represent` (observations -> codes [n, D]: a
trained encoder's mean, as in disentanglement_lib) and a numpy Generator, and returns a dict of floats.

  beta_vae      Higgins et al. 2017: accuracy of a logistic regression that tells, from the mean
                |z1 - z2| over batch_size pairs sharing one factor, which factor they share
  factor_vae    Kim & Mnih 2018: accuracy of the majority vote from the code dimension of least
                normalized variance (over batch_size examples sharing one factor) to the factor
  mig           Chen et al. 2018: mean over factors of the gap between the two largest mutual
                informations with a code dimension, over the factor's entropy
  dci           Eastwood & Williams 2018: from gradient-boosted trees' importances, disentanglement
                (one factor per code), completeness (one code per factor), informativeness (accuracy)
  sap           Kumar et al. 2018: mean over factors of the gap between the two best single-code
                predictors (linear SVMs' accuracy, or R^2 for continuous factors)
  modularity_explicitness  Ridgeway & Mozer 2018: each code's mutual information concentrated on one
                factor; the ROC-AUC of a logistic regression predicting each factor from all codes
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.stats
from sklearn import ensemble, linear_model, metrics, preprocessing, svm

Represent = Callable[[np.ndarray], np.ndarray]

# disentanglement_lib's unsupervised_study_v1 sample sizes (its metric_configs/*.gin): `--sizes paper`.
PAPER = {
    "beta_vae": {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000},
    "factor_vae": {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000, "num_variance_estimate": 10_000},
    "mig": {"num_train": 10_000},
    "dci": {"num_train": 10_000, "num_test": 5_000},
    "sap": {"num_train": 10_000, "num_test": 5_000},
    "modularity_explicitness": {"num_train": 10_000, "num_test": 5_000},
}


# The CPU protocol's: a tenth of each (the trees of DCI and the encodings of BetaVAE and FactorVAE
# dominate the time); said next to every number they give.
def scaled(fraction: float) -> dict:
    """disentanglement_lib's sample sizes times `fraction` (at least 10 points each; batch sizes kept)."""
    return {
        metric: {k: (v if k == "batch_size" else max(10, int(v * fraction))) for k, v in sizes.items()}
        for metric, sizes in PAPER.items()
    }


CPU = scaled(0.1)
SIZES = {"paper": PAPER, "cpu": CPU}


def sizes_of(name: str) -> dict:
    """The sample sizes `name` stands for: "paper", "cpu", or a fraction of the paper's, e.g. "0.01"."""
    if name in SIZES:
        return SIZES[name]
    try:
        fraction = float(name)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction <= 1:
        raise ValueError(f"sizes must be paper, cpu or a fraction in (0, 1] of the paper's, got {name!r}")
    return scaled(fraction)


NUM_BINS = 20
CHUNK = 2_000  # observations encoded at a time


def codes_of(data, represent: Represent, factors: np.ndarray) -> np.ndarray:
    """float64 [N, D] codes of the observations of factor rows [N, K], encoded CHUNK at a time."""
    parts = [
        np.asarray(represent(data.observations(factors[i : i + CHUNK])), np.float64)
        for i in range(0, len(factors), CHUNK)
    ]
    return np.concatenate(parts)


def sample_codes(data, represent: Represent, num: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(codes [num, D], factors [num, K]) of num observations with independently drawn factors."""
    factors = data.sample_factors(num, rng)
    return codes_of(data, represent, factors), factors


# --- shared pieces ----------------------------------------------------------------------------------


def histogram_discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Each code dimension [N, D] into num_bins equal-width bins of its own range (disentanglement_lib's
    histogram discretizer)."""
    out = np.zeros(codes.shape, np.int64)
    for j in range(codes.shape[1]):
        out[:, j] = np.digitize(codes[:, j], np.histogram(codes[:, j], num_bins)[1][:-1])
    return out


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """[D, K] mutual information (nats) between discrete codes [N, D] and factors [N, K]."""
    num_codes, num_factors = codes.shape[1], factors.shape[1]
    return np.array(
        [[metrics.mutual_info_score(factors[:, k], codes[:, d]) for k in range(num_factors)] for d in range(num_codes)]
    )


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """[K] entropy (nats) of each discrete factor column."""
    return np.array([metrics.mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def _gap_of_top_two(matrix: np.ndarray) -> np.ndarray:
    """Per column [D, K] -> [K], the largest entry minus the second largest."""
    ordered = np.sort(matrix, axis=0)
    return ordered[-1] - ordered[-2]


# --- BetaVAE score ----------------------------------------------------------------------------------


def _beta_vae_points(data, represent, batch_size: int, num_points: int, rng):
    labels = rng.integers(0, data.num_factors, num_points)
    first = data.sample_factors(num_points * batch_size, rng)
    second = data.sample_factors(num_points * batch_size, rng)
    shared = np.repeat(labels, batch_size)
    second[np.arange(len(second)), shared] = first[np.arange(len(first)), shared]
    diff = np.abs(codes_of(data, represent, first) - codes_of(data, represent, second))
    return diff.reshape(num_points, batch_size, -1).mean(axis=1), labels


def beta_vae(data, represent: Represent, rng, batch_size=64, num_train=10_000, num_eval=5_000) -> dict:
    train_x, train_y = _beta_vae_points(data, represent, batch_size, num_train, rng)
    model = linear_model.LogisticRegression(random_state=int(rng.integers(2**31)))
    model.fit(train_x, train_y)
    eval_x, eval_y = _beta_vae_points(data, represent, batch_size, num_eval, rng)
    return {"train_accuracy": float(model.score(train_x, train_y)), "eval_accuracy": float(model.score(eval_x, eval_y))}


# --- FactorVAE score --------------------------------------------------------------------------------


def _factor_vae_votes(data, represent, batch_size, num_points, rng, variances, active) -> np.ndarray:
    labels = rng.integers(0, data.num_factors, num_points)
    factors = data.sample_factors(num_points * batch_size, rng).reshape(num_points, batch_size, -1)
    factors[np.arange(num_points), :, labels] = factors[np.arange(num_points), 0, labels][:, None]
    codes = codes_of(data, represent, factors.reshape(num_points * batch_size, -1)).reshape(num_points, batch_size, -1)
    local = np.var(codes, axis=1, ddof=1)[:, active] / variances[active]
    votes = np.zeros((data.num_factors, int(active.sum())), np.int64)
    np.add.at(votes, (labels, np.argmin(local, axis=1)), 1)
    return votes


def factor_vae(
    data,
    represent: Represent,
    rng,
    batch_size=64,
    num_train=10_000,
    num_eval=5_000,
    num_variance_estimate=10_000,
    prune_threshold=0.05,
) -> dict:
    """Dimensions whose global standard deviation is below prune_threshold (collapsed to the prior)
    take no votes (disentanglement_lib's prune_dims.threshold = 0.05)."""
    codes, _ = sample_codes(data, represent, num_variance_estimate, rng)
    variances = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(variances) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train_votes = _factor_vae_votes(data, represent, batch_size, num_train, rng, variances, active)
    classifier = np.argmax(train_votes, axis=0)  # each active dimension's factor
    columns = np.arange(train_votes.shape[1])
    eval_votes = _factor_vae_votes(data, represent, batch_size, num_eval, rng, variances, active)
    return {
        "train_accuracy": float(train_votes[classifier, columns].sum() / train_votes.sum()),
        "eval_accuracy": float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
        "num_active_dims": int(active.sum()),
    }


# --- MIG --------------------------------------------------------------------------------------------


def mig_of(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS, discretize: bool = True) -> float:
    discrete = histogram_discretize(codes, num_bins) if discretize else codes
    mi = discrete_mutual_info(discrete, factors)
    return float(np.mean(_gap_of_top_two(mi) / discrete_entropy(factors)))


def mig(data, represent: Represent, rng, num_train=10_000) -> dict:
    codes, factors = sample_codes(data, represent, num_train, rng)
    return {"discrete_mig": mig_of(codes, factors)}


# --- DCI --------------------------------------------------------------------------------------------


def dci_disentanglement(importance: np.ndarray) -> float:
    """Code-importance-weighted mean over codes of 1 - the entropy (base K) of the code's importances."""
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    if importance.sum() == 0:
        importance = np.ones_like(importance)
    return float(np.sum(per_code * importance.sum(axis=1) / importance.sum()))


def dci_completeness(importance: np.ndarray) -> float:
    """Factor-importance-weighted mean over factors of 1 - the entropy (base D) of its importances."""
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    if importance.sum() == 0:
        importance = np.ones_like(importance)
    return float(np.sum(per_factor * importance.sum(axis=0) / importance.sum()))


def dci(data, represent: Represent, rng, num_train=10_000, num_test=5_000) -> dict:
    x_train, y_train = sample_codes(data, represent, num_train, rng)
    x_test, y_test = sample_codes(data, represent, num_test, rng)
    importance = np.zeros((x_train.shape[1], y_train.shape[1]))
    train_acc, test_acc = [], []
    for k in range(y_train.shape[1]):
        model = ensemble.GradientBoostingClassifier(random_state=int(rng.integers(2**31)))
        model.fit(x_train, y_train[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(x_train) == y_train[:, k]))
        test_acc.append(np.mean(model.predict(x_test) == y_test[:, k]))
    return {
        "disentanglement": dci_disentanglement(importance),
        "completeness": dci_completeness(importance),
        "informativeness_train": float(np.mean(train_acc)),
        "informativeness_test": float(np.mean(test_acc)),
    }


# --- SAP --------------------------------------------------------------------------------------------


def sap_score_matrix(x_train, y_train, x_test, y_test, continuous_factors: bool = False) -> np.ndarray:
    """[D, K]: how well each single code predicts each factor (R^2, or a balanced linear SVM's accuracy)."""
    out = np.zeros((x_train.shape[1], y_train.shape[1]))
    for d in range(x_train.shape[1]):
        for k in range(y_train.shape[1]):
            if continuous_factors:
                cov = np.cov(x_train[:, d], y_train[:, k], ddof=1)
                out[d, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            else:
                classifier = svm.LinearSVC(C=0.01, class_weight="balanced")
                classifier.fit(x_train[:, d, None], y_train[:, k])
                out[d, k] = np.mean(classifier.predict(x_test[:, d, None]) == y_test[:, k])
    return out


def sap(data, represent: Represent, rng, num_train=10_000, num_test=5_000, continuous_factors=False) -> dict:
    x_train, y_train = sample_codes(data, represent, num_train, rng)
    x_test, y_test = sample_codes(data, represent, num_test, rng)
    matrix = sap_score_matrix(x_train, y_train, x_test, y_test, continuous_factors)
    return {"sap_score": float(np.mean(_gap_of_top_two(matrix)))}


# --- Modularity and explicitness --------------------------------------------------------------------


def modularity_of(mutual_information: np.ndarray) -> float:
    """Mean over codes of 1 - (the squared MI off the code's best factor) / (its best squared MI x (K - 1));
    a code that shares no information scores 0."""
    squared = np.square(mutual_information)
    best = squared.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - (squared.sum(axis=1) - best) / (best * (squared.shape[1] - 1.0))
    score[best == 0] = 0.0
    return float(np.mean(score))


def _explicitness(x_train, y_train, x_test, y_test) -> tuple[float, float]:
    classifier = linear_model.LogisticRegression().fit(x_train, y_train)
    binarizer = preprocessing.MultiLabelBinarizer()
    train = metrics.roc_auc_score(binarizer.fit_transform(y_train[:, None]), classifier.predict_proba(x_train))
    test = metrics.roc_auc_score(binarizer.fit_transform(y_test[:, None]), classifier.predict_proba(x_test))
    return train, test


def modularity_explicitness(data, represent: Represent, rng, num_train=10_000, num_test=5_000) -> dict:
    x_train, y_train = sample_codes(data, represent, num_train, rng)
    x_test, y_test = sample_codes(data, represent, num_test, rng)
    modularity = modularity_of(discrete_mutual_info(histogram_discretize(x_train), y_train))
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    scores = np.array([_explicitness(x_train, y_train[:, k], x_test, y_test[:, k]) for k in range(y_train.shape[1])])
    return {
        "modularity_score": modularity,
        "explicitness_score_train": float(scores[:, 0].mean()),
        "explicitness_score_test": float(scores[:, 1].mean()),
    }


METRICS = {
    "beta_vae": beta_vae,
    "factor_vae": factor_vae,
    "mig": mig,
    "dci": dci,
    "sap": sap,
    "modularity_explicitness": modularity_explicitness,
}


def evaluate_all(data, represent: Represent, seed: int = 0, sizes: dict | None = None, names=None) -> dict:
    """Every metric (or `names`), each with its own Generator seeded by (seed, its name) and its sample
    sizes from `sizes` (default PAPER, disentanglement_lib's), so that one metric's draws never shift another's."""
    sizes = PAPER if sizes is None else sizes
    out = {}
    for name in names or METRICS:
        rng = np.random.default_rng([seed, list(METRICS).index(name)])
        out[name] = METRICS[name](data, represent, rng, **sizes.get(name, {}))
    return out


def encoder_mean(model, params) -> Represent:
    """The representation disentanglement_lib scores: the mean of q(z | x) of an unconditional model."""
    from cvae_jax.apps import inference

    if model.conditional:
        raise ValueError(
            "the disentanglement metrics score q(z | x) of an unconditional model; this run is a CVAE "
            "(train it with --model vae)"
        )
    return lambda x: np.asarray(inference.encode(model, params, np.asarray(x, np.float32))[0])


def evaluate_run(model, params, config, sizes: str = "paper", seed: int = 0) -> dict:
    """Every metric for a model trained on data.source=sprites (the rendered grid, or the dSprites file
    at data.path), with the sample sizes `sizes` ("paper", "cpu" or a fraction: `sizes_of`)."""
    from cvae_jax.data import sprites

    if config.data.source != "sprites":
        raise ValueError(
            f"the disentanglement metrics need data with known factors (data.source=sprites); this run "
            f"trained on data.source={config.data.source}"
        )
    chosen = sizes_of(sizes)
    data = sprites.factor_data(config.data.path)
    scores = evaluate_all(data, encoder_mean(model, params), seed, chosen)
    return {
        "data": data.name,
        "factors": dict(zip(data.factor_names, data.factor_sizes)),
        "sizes": sizes,
        "seed": seed,
        "metrics": scores,
    }
