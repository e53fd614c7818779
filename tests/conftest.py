"""Shared test helpers. Tests that need float64 use `with jax.enable_x64(True):` locally."""

import jax.numpy as jnp
import numpy as np


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
