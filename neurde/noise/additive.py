r"""Additive noise injection: $dX = f\,dt + \sigma(t)\,dW$ (Liu et al. 2019, "Neural SDE")."""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array

from .base import AbstractScaledNoise
from .transform import inject


class Additive(AbstractScaledNoise):
    r"""Additive diffusion $g = \sigma\,s(t)\,\mathbf{1}$: each coordinate gets its own noise.

    **Arguments:**

    - `sigma`: the noise level, >= 0.
    - `schedule`: optional factor $s(t)$ (a function of time returning a scalar); constant 1
      when left out.

    Reference: Liu, Xiao, Si, Cao, Kumar, Hsieh, "Neural SDE: Stabilizing Neural ODE
    Networks with Stochastic Noise", 2019 (additive noise, Section 3).
    """

    def scale(self, t: Array, y: Array, f: Array) -> Array:
        return jnp.broadcast_to(self.level(t, y.dtype), y.shape)


def additive(
    model: Any, sigma: float, *, schedule: Callable[[Any], Any] | None = None, **options: Any
) -> Any:
    r"""Add $\sigma\,s(t)\,dW$ to `model`: a continuous model becomes an SDE, a ResNet gets
    $\sqrt{h}\,\sigma\,s(t)\,\xi$ per block. `options` (`solver`, `dt0`, `brownian`,
    `where`) are those of `neurde.noise.inject`."""
    return inject(model, Additive(sigma, schedule), **options)
