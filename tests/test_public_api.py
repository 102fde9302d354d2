"""The stable public names of ``adacode_jax`` (README, CHANGELOG): where they lead, and that
importing the package stays light."""
import subprocess
import sys

import pytest

import adacode_jax


def test_each_public_name_is_the_object_it_documents():
    from adacode_jax import models, resources
    from adacode_jax.inference import convert, restorer

    assert adacode_jax.Restorer is restorer.Restorer
    assert adacode_jax.load_official is convert.load_official
    assert adacode_jax.build_model is models.build
    assert adacode_jax.model_config is models.model_config
    assert adacode_jax.load_config is resources.load_config
    assert sorted(adacode_jax.__all__) == ["Restorer", "build_model", "load_config",
                                           "load_official", "model_config"]


def test_a_name_that_is_not_public_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'restore'"):
        adacode_jax.restore  # noqa: B018  (the module of 0.1.0, moved to inference.restorer)


def test_importing_the_package_imports_no_jax():
    code = "import sys, adacode_jax; print(sorted(m for m in ('jax', 'flax', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
