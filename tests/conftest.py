"""Shared test helpers. Tests that need float64 use `with jax.enable_x64(True):` locally."""

import gc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurde import noise


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


# The composition matrix of the model families: the transforms by name, and the documented
# meaning of a stack of them on a model that holds its differential equation as `.model`.
CONTINUOUS_TRANSFORMS = ("additive", "multiplicative", "dropout_diffusion", "steer", "rnode")


def transform(name: str, model: Any, *, steer_b: float = 0.1, samples: int = 2) -> Any:
    """`model` under the transform called `name`, at the matrix's small settings."""
    calls = {
        "additive": lambda m: noise.additive(m, 0.2),
        "multiplicative": lambda m: noise.multiplicative(m, 0.3),
        "dropout_diffusion": lambda m: noise.dropout_diffusion(m, 0.2),
        "steer": lambda m: noise.steer(m, steer_b),
        "rnode": lambda m: noise.rnode(m, estimator="exact"),
        "residual_dropout": lambda m: noise.residual_dropout(m, 0.3),
        "stochastic_depth": lambda m: noise.stochastic_depth(m, 0.7),
        "shake_shake": lambda m: noise.shake_shake(m),
        "shake_drop": lambda m: noise.shake_drop(m, 0.7),
        "monte_carlo": lambda m: noise.MonteCarlo(m, samples),
        "inference_mode": eqx.nn.inference_mode,
    }
    return calls[name](model)


def _innermost_wrapper(model: Any) -> Any:
    """The family model inside any `MonteCarlo` wrappers."""
    while isinstance(model, noise.MonteCarlo):
        model = model.model
    return model


def reference(base: Any, names: tuple[str, ...]) -> Any:
    """The continuous transforms applied to the inner model (`.model`), the others outside."""
    model = base
    for name in names:
        if name in CONTINUOUS_TRANSFORMS:
            inner = _innermost_wrapper(model)
            model = eqx.tree_at(
                lambda m: _innermost_wrapper(m).model, model, transform(name, inner.model)
            )
        else:
            model = transform(name, model)
    return model
