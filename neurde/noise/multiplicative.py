r"""Multiplicative noise injection: $dX = f\,dt + \sigma(t) \operatorname{diag}(X)\,dW$."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
from jaxtyping import Array

from .base import AbstractNoise, check_schedule, check_sigma, scheduled
from .transform import inject


class Multiplicative(AbstractNoise):
    r"""Multiplicative diffusion $g = \sigma\,s(t)\,y$: noise proportional to the state.

    **Arguments:** `sigma` (>= 0) and an optional time factor `schedule` $s(t)$, as for
    `Additive`.

    Reference: Liu et al., "Neural SDE: Stabilizing Neural ODE Networks with Stochastic
    Noise", 2019 (multiplicative noise, Section 3).
    """

    sigma: float = eqx.field(static=True)
    schedule: Callable[[Any], Any] | None = eqx.field(static=True)

    def __init__(self, sigma: float, schedule: Callable[[Any], Any] | None = None):
        self.sigma = check_sigma("Multiplicative", sigma)
        check_schedule("Multiplicative", schedule)
        self.schedule = schedule

    def scale(self, t: Array, y: Array, f: Array) -> Array:
        return scheduled(self.sigma, self.schedule, t, y.dtype) * y


def multiplicative(
    model: Any, sigma: float, *, schedule: Callable[[Any], Any] | None = None, **options: Any
) -> Any:
    r"""Add $\sigma\,s(t) \operatorname{diag}(X)\,dW$ to `model` (continuous or Euler net);
    `options` (`solver`, `dt0`, `brownian`, `where`) are those of
    `neurde.noise.inject`."""
    return inject(model, Multiplicative(sigma, schedule), **options)
