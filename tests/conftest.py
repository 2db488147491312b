"""Test set-up: eight fake CPU devices (for sharding tests), configured before JAX starts.
``FWL_TEST_GPU=1`` keeps JAX's default backend instead, for the tests that need a GPU
(they skip elsewhere): ``FWL_TEST_GPU=1 python -m pytest -o addopts="" tests/test_attention.py``."""

import os

import jax
import pytest

if os.environ.get("FWL_TEST_GPU") != "1":
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture
def x64():
    """Runs the test with float64 enabled (exactness tests), restoring the default after."""
    with jax.enable_x64(True):
        yield
