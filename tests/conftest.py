"""Shared test helpers. Tests that need float64 use `with jax.enable_x64(True):` locally."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop each test file's compiled programs when it is done.

    A worker runs hundreds of files; keeping every executable (JAX caches them for the life
    of the process) grows its memory by gigabytes on a small CI machine. A file's own
    programs stay cached while it runs, so its tests still reuse them.
    """
    yield
    jax.clear_caches()
    gc.collect()


def central_differences(fn, x, eps=1e-6):
    """Central finite-difference gradient of a scalar function of a flat float64 array."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = eps
        grad.flat[i] = (float(fn(jnp.asarray(x + e))) - float(fn(jnp.asarray(x - e)))) / (2 * eps)
    return grad


def fitted_order(hs, errors):
    """Slope of log(error) against log(h): the observed order of convergence."""
    return float(np.polyfit(np.log(np.asarray(hs)), np.log(np.asarray(errors)), 1)[0])
