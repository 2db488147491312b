"""Test set-up: eight fake CPU devices (for sharding tests), configured before JAX starts."""

import jax
import pytest

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture
def x64():
    """Runs the test with float64 enabled (exactness tests), restoring the default after."""
    with jax.enable_x64(True):
        yield
