"""Configs as data: presets, overrides, validation messages, JSON round trip."""

import json

import pytest

from cvae_jax.config import ConfigError, apply_overrides, from_dict, get_config


def test_presets():
    assert get_config().model.kind == "cvae" and get_config().model.latent_dim == 16
    article_vae = get_config("vae", "article").model
    assert (article_vae.encoder_hidden, article_vae.latent_dim, article_vae.decoder_hidden) == ((256,), 2, (256,))
    article_cvae = get_config("cvae", "article").model
    assert article_cvae.encoder_conv == (32,) and article_cvae.condition_site == "head"


def test_overrides_parse_types():
    cfg = apply_overrides(
        get_config(),
        [
            "model.latent_dim=32",
            "model.encoder_hidden=256,128",
            "train.beta=0.5",
            "data.binarize=true",
            "seed=3",
            "model.decoder_hidden=()",
        ],
    )
    assert cfg.model.latent_dim == 32 and cfg.model.encoder_hidden == (256, 128)
    assert cfg.train.beta == 0.5 and cfg.data.binarize is True and cfg.seed == 3
    assert cfg.model.decoder_hidden == ()
    assert get_config().model.latent_dim == 16  # the original is untouched


def test_json_round_trip():
    cfg = apply_overrides(get_config("vae", "article"), ["train.epochs=7"])
    again = from_dict(json.loads(cfg.to_json()))
    assert again == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.beta=-1", "train.beta must be >= 0, got -1.0"),
        ("model.latent_dim=0", "model.latent_dim must be >= 1, got 0"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("train.learning_rate=0", "train.learning_rate must be > 0"),
        ("train.learning_rate=nan", "train.learning_rate must be a finite number, got nan"),
        ("model.gaussian_scale=inf", "model.gaussian_scale must be a finite number, got inf"),
        ("train.cycle_steps=-5", "train.cycle_steps must be >= 0"),
        ("checkpoint.every_steps=-1", "checkpoint.every_steps must be >= 0 (0 = off), got -1"),
        ("model.likelihood=poisson", "model.likelihood must be one of"),
        ("train.optimizer=lbfgs", "train.optimizer must be one of"),
        ("model.kind=gan", "model.kind must be one of"),
        ("model.latent_size=3", "unknown config field 'model.latent_size'"),
        ("optim.lr=3", "unknown config section 'optim'"),
        ("train.epochs=ten", "cannot parse train.epochs='ten' as int"),
        ("data.binarize=maybe", "cannot parse data.binarize"),
        ("train.epochs", "must look like section.field=value"),
        ("data.source=npz", "needs data.path"),
        ("model.learn_scale=true", "needs model.likelihood=gaussian"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        apply_overrides(get_config(), [override])


def test_unknown_model_or_preset():
    with pytest.raises(ConfigError, match="model must be one of"):
        get_config("gan")
    with pytest.raises(ConfigError, match="preset must be one of"):
        get_config("vae", "huge")
