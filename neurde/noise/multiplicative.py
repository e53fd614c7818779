r"""Multiplicative noise injection: $dX = f\,dt + \sigma(t) \operatorname{diag}(X)\,dW$."""

from collections.abc import Callable
from typing import Any

from jaxtyping import Array

from .base import AbstractScaledNoise
from .transform import inject


class Multiplicative(AbstractScaledNoise):
    r"""Multiplicative diffusion $g = \sigma\,s(t)\,y$: noise proportional to the state.

    **Arguments:** `sigma` (>= 0) and an optional time factor `schedule` $s(t)$, as for
    `Additive`.

    Reference: Liu et al., "Neural SDE: Stabilizing Neural ODE Networks with Stochastic
    Noise", 2019 (multiplicative noise, Section 3).
    """

    def scale(self, t: Array, y: Array, f: Array) -> Array:
        return self.level(t, y.dtype) * y


def multiplicative(
    model: Any, sigma: float, *, schedule: Callable[[Any], Any] | None = None, **options: Any
) -> Any:
    r"""Add $\sigma\,s(t) \operatorname{diag}(X)\,dW$ to `model` (continuous or Euler net);
    `options` (`solver`, `dt0`, `brownian`, `where`) are those of
    `neurde.noise.inject`."""
    return inject(model, Multiplicative(sigma, schedule), **options)
