"""The leapfrog network: a second-order (hyperbolic) ODE, reversible."""

from typing import Any, ClassVar

import jax.numpy as jnp
from jaxtyping import Array

from .scheme import AbstractScheme, Pair


class Leapfrog(AbstractScheme):
    r"""Leapfrog blocks $Y_{j+1} = 2Y_j - Y_{j-1} + h^2 f_j(Y_j)$ for $\ddot Y = f(Y)$.

    The network starts at rest: the first block is the Taylor step
    $Y_1 = Y_0 + \tfrac{h^2}{2} f_0(Y_0)$ (zero initial velocity), which keeps the scheme
    second order. The state is the pair $(Y_{j-1}, Y_j)$, from which the step can be undone
    exactly: $Y_{j-1} = 2Y_j - Y_{j+1} + h^2 f_j(Y_j)$. With $f = -K^\top\sigma(N(KY))$
    this is the hyperbolic PDE-CNN of Ruthotto & Haber.

    References: Chang, Meng, Haber, Tung, Begert, "Multi-level Residual Networks from
    Dynamical Systems View", ICLR 2018; Ruthotto & Haber, "Deep Neural Networks Motivated by
    Partial Differential Equations", J. Math. Imaging Vis. 2020.
    """

    reversible: ClassVar[bool] = True
    depth: ClassVar[None] = None
    evaluations_per_step: ClassVar[int] = 1

    def init(self, y0: Array) -> Pair:
        return y0, y0

    def step(
        self, block: Any, n: Array, t: Array, h: float, state: Pair, args: Any, key: Any
    ) -> Pair:
        previous, current = state
        weight = jnp.where(n == 0, 0.5, 1.0).astype(current.dtype)
        start = jnp.where(n == 0, current, previous)
        new = 2 * current - start + weight * h**2 * block(t, current, args)
        return current, new

    def inverse_step(
        self, block: Any, n: Array, t: Array, h: float, state: Pair, args: Any
    ) -> Pair:
        current, new = state
        previous = 2 * current - new + h**2 * block(t, current, args)
        # Before the first block both entries are Y_0.
        previous = jnp.where(n == 0, current, previous)
        return previous, current

    def output(self, state: Pair) -> Array:
        return state[1]
