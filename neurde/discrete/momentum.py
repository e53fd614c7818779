"""Momentum ResNets: a damped second-order ODE, invertible without storing activations."""

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .scheme import AbstractScheme, Pair


class Momentum(AbstractScheme):
    r"""Momentum ResNet: $v_{n+1} = \gamma v_n + (1-\gamma) f_n(x_n)$, $x_{n+1} = x_n + h v_{n+1}$.

    Sander et al. use $h = 1$; the step $h$ here makes the depth limit the damped
    second-order ODE $\varepsilon \ddot x + \dot x = f(x)$. The velocity starts at zero and
    the step is exactly invertible for $\gamma > 0$:
    $x_n = x_{n+1} - h v_{n+1}$, $v_n = (v_{n+1} - (1-\gamma) f_n(x_n)) / \gamma$.

    **Arguments:**

    - `gamma`: momentum in (0, 1).

    References: Sander, Ablin, Blondel, Peyré, "Momentum Residual Neural Networks", ICML 2021.
    """

    gamma: float = eqx.field(static=True)
    reversible: ClassVar[bool] = True
    depth: ClassVar[None] = None
    evaluations_per_step: ClassVar[int] = 1

    def __init__(self, gamma: float = 0.9):
        if not 0 < gamma < 1:
            raise ValueError(
                f"Momentum: `gamma` must lie in (0, 1), got {gamma!r}; gamma = 0 is a "
                "ResNet (use Euler()) and is not invertible."
            )
        self.gamma = float(gamma)

    def init(self, y0: Array) -> Pair:
        return y0, jnp.zeros_like(y0)

    def step(
        self, block: Any, n: Array, t: Array, h: float, state: Pair, args: Any, key: Any
    ) -> Pair:
        x, v = state
        v = self.gamma * v + (1 - self.gamma) * block(t, x, args)
        return x + h * v, v

    def inverse_step(
        self, block: Any, n: Array, t: Array, h: float, state: Pair, args: Any
    ) -> Pair:
        x, v = state
        x = x - h * v
        return x, (v - (1 - self.gamma) * block(t, x, args)) / self.gamma

    def output(self, state: Pair) -> Array:
        return state[0]
