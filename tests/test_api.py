"""The public API of the README and docs is importable from `cvae_jax`, and importing it changes no
process-wide setting (the allocator setting is the CLI's: tests/test_host.py)."""

from __future__ import annotations

import types

import pytest

import cvae_jax


@pytest.mark.parametrize("name", cvae_jax.__all__)
def test_every_public_name_resolves(name):
    """Each name is the module, class or function of that name (not a stand-in or another object)."""
    found = getattr(cvae_jax, name)
    assert isinstance(found, types.ModuleType) or callable(found)
    assert found.__name__.split(".")[-1] == name


def test_short_module_names_are_the_layered_modules():
    from cvae_jax import anomaly, inference, priors, translate
    from cvae_jax.apps import anomaly as apps_anomaly
    from cvae_jax.apps import inference as apps_inference
    from cvae_jax.apps import translate as apps_translate
    from cvae_jax.core import priors as core_priors

    assert (priors, inference, translate, anomaly) == (core_priors, apps_inference, apps_translate, apps_anomaly)
    assert isinstance(cvae_jax.molecules, types.ModuleType) and callable(cvae_jax.molecules.train)
    assert callable(cvae_jax.data.load) and callable(cvae_jax.keep_freed_memory)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        cvae_jax.nonexistent  # noqa: B018
