"""The disentanglement metrics against closed forms (hand-computed importance and information matrices,
MIG on a balanced grid) and against the properties disentanglement_lib's own tests hold them to: a
representation equal to the factors scores (near) 1, one independent of them scores chance or 0, and a
duplicated code is neither complete nor has a gap."""

import numpy as np
import pytest

from cvae_jax.apps import disentanglement as dm
from cvae_jax.data.sprites import FactorData

K, VALUES = 5, 10  # five factors of ten values, the observation being the factor vector itself


class IdentityObservations(FactorData):
    def observations(self, factors):
        return np.asarray(factors, np.float64)


DATA = IdentityObservations([VALUES] * K, None, "identity", [f"f{i}" for i in range(K)])
SIZES = {
    "beta_vae": {"batch_size": 5, "num_train": 1000, "num_eval": 1000},
    "factor_vae": {"batch_size": 5, "num_train": 1000, "num_eval": 1000, "num_variance_estimate": 1000},
    "mig": {"num_train": 3000},
    "dci": {"num_train": 600, "num_test": 600},
    "sap": {"num_train": 1000, "num_test": 1000, "continuous_factors": True},
    "modularity_explicitness": {"num_train": 2000, "num_test": 1000},
}


def scores(represent, names=None):
    return dm.evaluate_all(DATA, represent, seed=0, sizes=SIZES, names=names)


@pytest.fixture(scope="module")
def perfect():
    return scores(lambda x: 3.0 * x[:, ::-1] - 7.0)  # the factors, reordered and affinely rescaled


def independent(x):
    """Codes that carry no information about the factors: fresh normal noise for every call."""
    return np.random.default_rng(int(x.sum()) + len(x)).normal(size=(len(x), K))


def test_the_factors_themselves_score_one_on_every_metric(perfect):
    assert perfect["beta_vae"]["eval_accuracy"] == 1.0
    assert perfect["factor_vae"]["eval_accuracy"] >= 0.99
    assert perfect["mig"]["discrete_mig"] >= 0.97
    assert perfect["dci"]["disentanglement"] >= 0.97 and perfect["dci"]["completeness"] >= 0.97
    assert perfect["dci"]["informativeness_test"] == 1.0
    assert perfect["sap"]["sap_score"] >= 0.97
    assert perfect["modularity_explicitness"]["modularity_score"] >= 0.97
    assert perfect["modularity_explicitness"]["explicitness_score_test"] >= 0.99


@pytest.mark.slow
def test_codes_independent_of_the_factors_score_chance_or_zero():
    got = scores(independent)
    assert abs(got["beta_vae"]["eval_accuracy"] - 1 / K) < 0.06  # chance among K factors
    assert abs(got["factor_vae"]["eval_accuracy"] - 1 / K) < 0.08
    assert got["mig"]["discrete_mig"] < 0.02
    assert got["dci"]["disentanglement"] < 0.1 and abs(got["dci"]["informativeness_test"] - 1 / VALUES) < 0.05
    assert got["sap"]["sap_score"] < 0.02
    assert abs(got["modularity_explicitness"]["explicitness_score_test"] - 0.5) < 0.03  # chance ROC-AUC


def test_a_duplicated_code_has_no_gap_and_half_the_completeness():
    got = scores(lambda x: np.hstack([x, x]), names=["mig", "sap", "dci"])
    assert got["mig"]["discrete_mig"] < 0.01
    assert got["sap"]["sap_score"] < 0.01
    # Each factor's importance splits evenly over its two copies among 2K codes: 1 - log 2 / log 2K.
    assert got["dci"]["completeness"] == pytest.approx(1 - np.log(2) / np.log(2 * K), abs=0.03)
    assert got["dci"]["disentanglement"] >= 0.97


def test_collapsed_codes_get_no_factor_vae_votes():
    got = scores(np.zeros_like, names=["factor_vae"])
    assert got["factor_vae"] == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


# Closed forms: the importance and information matrices of disentanglement_lib's tests, worked by hand.
DIAGONAL = np.diag(5.0 * np.ones(5))


@pytest.mark.parametrize(
    "matrix, disentanglement, completeness",
    [
        (DIAGONAL, 1.0, 1.0),
        (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 1.0, 1.0),  # an empty code changes neither
        (np.zeros((10, 10)), 0.0, 0.0),
        (np.vstack([DIAGONAL, DIAGONAL]), 1.0, 1 - np.log(2) / np.log(10)),  # each factor in 2 of 10 codes
        (np.hstack([DIAGONAL, DIAGONAL]), 1 - np.log(2) / np.log(10), 1.0),  # each code on 2 of 10 factors
    ],
)
def test_dci_of_hand_worked_importance_matrices(matrix, disentanglement, completeness):
    assert dm.dci_disentanglement(matrix) == pytest.approx(disentanglement, abs=1e-7)
    assert dm.dci_completeness(matrix) == pytest.approx(completeness, abs=1e-7)


@pytest.mark.parametrize(
    "matrix, expected",
    [
        (DIAGONAL, 1.0),
        (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 2 / 3),  # the empty code scores 0
        (np.zeros((10, 10)), 0.0),
        (np.hstack([DIAGONAL, DIAGONAL]), 1 - 1 / 9),  # 1 - 25 / (25 x 9) per code
    ],
)
def test_modularity_of_hand_worked_information_matrices(matrix, expected):
    assert dm.modularity_of(matrix) == pytest.approx(expected)


def test_mig_on_a_balanced_grid_is_exactly_one_or_zero():
    # Two factors of 4 values on their full grid: independent, so a code equal to one factor has
    # exactly zero information about the other.
    f = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    assert dm.mig_of(f, f, discretize=False) == pytest.approx(1.0)
    assert dm.mig_of(f[:, [0, 0]], f, discretize=False) == pytest.approx(0.0)  # both codes on factor 0
    # One code holds factor 0, the other both: factor 0's gap is H - H = 0, factor 1's is H: MIG 1/2.
    both = f[:, 0] * 4 + f[:, 1]
    assert dm.mig_of(np.stack([f[:, 0], both], 1), f, discretize=False) == pytest.approx(0.5)


def test_histogram_discretize_uses_equal_width_bins_of_each_codes_range():
    codes = np.array([[0.0, 10.0], [0.49, 10.0], [0.5, 20.0], [1.0, 30.0]])
    got = dm.histogram_discretize(codes, num_bins=2)
    assert got[:, 0].tolist() == [1, 1, 2, 2]  # bins [0, 0.5) and [0.5, 1]
    assert got[:, 1].tolist() == [1, 1, 2, 2]


def test_the_metrics_draw_the_same_numbers_for_the_same_seed():
    represent = lambda x: x + 0.1 * np.sin(x)  # noqa: E731
    assert scores(represent, names=["mig", "beta_vae"]) == scores(represent, names=["beta_vae", "mig"])


def test_sample_sizes_are_the_papers_a_tenth_or_a_fraction():
    assert dm.sizes_of("paper")["dci"] == {"num_train": 10_000, "num_test": 5_000}
    assert dm.sizes_of("cpu")["beta_vae"] == {"batch_size": 64, "num_train": 1_000, "num_eval": 500}
    assert dm.sizes_of("0.02")["factor_vae"]["num_variance_estimate"] == 200
    with pytest.raises(ValueError, match="fraction"):
        dm.sizes_of("2")
    with pytest.raises(ValueError, match="fraction"):
        dm.sizes_of("tiny")


def test_a_conditional_model_or_data_without_factors_is_refused():
    from cvae_jax import build_model, get_config

    cvae = build_model(get_config("cvae").model, (28, 28, 1), 10)
    with pytest.raises(ValueError, match="unconditional model"):
        dm.encoder_mean(cvae, None)
    with pytest.raises(ValueError, match="data.source=sprites"):
        dm.evaluate_run(build_model(get_config("vae").model, (28, 28, 1), 10), None, get_config("vae"))
