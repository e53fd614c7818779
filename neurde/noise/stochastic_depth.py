r"""Stochastic depth: each residual block survives with probability $p_l$ (Huang et al. 2016).

Discrete form $x_{n+1} = x_n + h\,e_n f_n(x_n)$ with one $e_n \sim$ Bernoulli$(p_n)$ per
block and example, $p_l = 1 - \frac{l}{L}(1 - p_L)$ for block $l = 1..L$; at test time the
branch is scaled by $p_l$. SDE form: drift $p_l f$, scalar noise with standard deviation
$\sqrt{p_l (1 - p_l)}\,f$ (multiplicative in the branch).
"""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from .base import AbstractBranchRegularizer, check_probability, linear_survival
from .stochastic_euler import Form
from .transform import Where, regularize


class StochasticDepth(AbstractBranchRegularizer):
    r"""Drop whole residual blocks; survival falls linearly to `survival_last` at the last block.

    **Arguments:** `survival_last`, the last block's survival probability $p_L$ in (0, 1)
    (Huang et al. use 0.5).

    Reference: Huang, Sun, Liu, Sedra, Weinberger, "Deep Networks with Stochastic Depth",
    ECCV 2016 (Eq. 4 for the linear decay).
    """

    survival_last: float = eqx.field(static=True, default=0.5)

    def __check_init__(self):
        check_probability(
            "StochasticDepth", "survival_last", self.survival_last, "the last block's survival"
        )

    def survival(self, n: Array, depth: int) -> Array:
        """$p_l$ of block `n` (counting from 0)."""
        return linear_survival(n, depth, self.survival_last)

    def sample(self, key: PRNGKeyArray, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        (f,) = fs
        alive = jr.bernoulli(key, self.survival(n, depth))
        return jnp.where(alive, f, 0.0)

    def mean(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        return self.survival(n, depth).astype(fs[0].dtype) * fs[0]

    def std(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        p = self.survival(n, depth).astype(fs[0].dtype)
        return jnp.sqrt(p * (1 - p)) * fs[0]


def stochastic_depth(
    model: Any, survival_last: float = 0.5, *, form: Form = "discrete", where: Where = None
) -> Any:
    """Stochastic depth on every block of an Euler stack (linear decay of the survival
    probability to `survival_last`); `form` and `where` as for `neurde.noise.regularize`."""
    return regularize(model, StochasticDepth(survival_last), form=form, where=where)
