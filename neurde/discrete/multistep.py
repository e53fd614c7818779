"""Two-step linear multistep blocks: LM-ResNet and the midpoint network."""

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .scheme import AbstractScheme, Pair


class LinearMultistep(AbstractScheme):
    r"""LM-ResNet: $x_{n+1} = (1 - k_n) x_n + k_n x_{n-1} + (1 + k_n) h f_n(x_n)$.

    Lu et al. write the block as $(1 - k_n) x_n + k_n x_{n-1} + f_n(x_n)$ with the step
    absorbed into $f_n$; the factor $(1 + k_n) h$ here is what makes the two-step method
    consistent with $\dot x = f(x)$ for every $k_n$ (first order), and $k_n = 1$ gives the
    explicit midpoint rule (second order). The first block is a plain Euler (ResNet) block, as
    in the paper, since no $x_{-1}$ exists. With `trainable=True` the $k_n$ are parameters,
    initialized to `k`.

    The scheme's characteristic polynomial is $(z - 1)(z + k)$, so it is zero-stable (errors
    do not grow with depth at a fixed step) exactly for $k \in (-1, 1]$; initial values outside
    that interval are rejected. Trained $k_n$ are not constrained: watch them, or add a
    penalty, if depth grows large.

    **Arguments:**

    - `depth`: number of blocks (>= 2).
    - `k`: initial value(s) of $k_n$: a scalar or an array of shape `(depth,)`.
    - `trainable`: whether $k_n$ are learned; a fixed `k` must be a scalar.

    References: Lu, Zhong, Li, Dong, "Beyond Finite Layer Neural Networks: Bridging Deep
    Architectures and Numerical Differential Equations", ICML 2018.
    """

    k: Float[Array, " depth"] | None
    k_fixed: float | None = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    reversible: ClassVar[bool] = False
    evaluations_per_step: ClassVar[int] = 1

    def __init__(self, depth: int, k: Any = 0.0, *, trainable: bool = True):
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(
                f"LinearMultistep: a two-step scheme needs `depth` >= 2, got {depth!r}. Use "
                "Euler() for a single block."
            )
        k_values = np.asarray(k, dtype=float)
        if not np.all((k_values > -1) & (k_values <= 1)):
            raise ValueError(
                f"LinearMultistep: `k` must lie in (-1, 1] for a zero-stable scheme (roots 1 "
                f"and -k of (z - 1)(z + k)), got {k!r}. Lu et al. initialize k in [-0.1, 0]; "
                "k = 1 is the midpoint rule."
            )
        self.depth = depth
        if trainable:
            self.k = jnp.broadcast_to(jnp.asarray(k, dtype=float), (depth,))
            self.k_fixed = None
        else:
            # A fixed k is static data, so no optimizer (or weight decay) can move it.
            self.k = None
            self.k_fixed = float(k)

    @classmethod
    def midpoint(cls, depth: int) -> "LinearMultistep":
        r"""The midpoint network $Y_{j+1} = Y_{j-1} + 2h f_j(Y_j)$ (explicit midpoint rule).

        LM-ResNet with $k_n = 1$ fixed; the first block is an Euler step. Second order. (The
        two-step midpoint rule, not `diffrax.Midpoint`, which is the one-step explicit
        midpoint Runge–Kutta method: that one is `RungeKutta.rk2()` here.)

        References: Chang, Meng, Haber, Tung, Begert, "Multi-level Residual Networks from
        Dynamical Systems View", ICLR 2018.
        """
        return cls(depth, 1.0, trainable=False)

    def init(self, y0: Array) -> Pair:
        return y0, y0

    def step(
        self, block: Any, n: Array, t: Array, h: float, state: Pair, args: Any, key: Any
    ) -> Pair:
        previous, current = state
        k = jnp.asarray(self.k_fixed) if self.k is None else self.k
        # The first block bootstraps with Euler (k = 0), as in Lu et al.
        k = jnp.where(n == 0, 0.0, k).astype(current.dtype)
        new = (1 - k) * current + k * previous + (1 + k) * h * block(t, current, args)
        return current, new

    def output(self, state: Pair) -> Array:
        return state[1]
