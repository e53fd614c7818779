r"""Shake-Shake: two residual branches mixed by a random convex weight (Gastaldi 2017).

Discrete form $x_{n+1} = x_n + h\,(a f^1 + (1 - a) f^2)$ with $a \sim U(0, 1)$ drawn per
block and example in the forward pass and an independent $b \sim U(0, 1)$ in the backward
pass ("Shake-Shake" in the paper's terms); $a = 1/2$ at test time. SDE form: drift
$(f^1 + f^2)/2$, scalar noise with standard deviation $\sqrt{1/12}\,(f^1 - f^2)$.
"""

from typing import Any, ClassVar

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from .base import AbstractBranchRegularizer, straight_through
from .stochastic_euler import Form
from .transform import Where, regularize


class ShakeShake(AbstractBranchRegularizer):
    r"""Shake-Shake regularization of a stack whose blocks are `Branches`.

    The forward pass uses $a$, the backward pass an independent $b$: the value is
    $a f^1 + (1-a) f^2$ and its gradient that of $b f^1 + (1-b) f^2$.

    Reference: Gastaldi, "Shake-Shake regularization", 2017 (Section 2, "Shake-Shake-Image":
    one draw per image).
    """

    branches: ClassVar[int] = 2

    def sample(self, key: PRNGKeyArray, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        f1, f2 = fs
        forward_key, backward_key = jr.split(key)
        a = jr.uniform(forward_key, dtype=f1.dtype)
        b = jr.uniform(backward_key, dtype=f1.dtype)
        return straight_through(a * f1 + (1 - a) * f2, b * f1 + (1 - b) * f2)

    def mean(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        return (fs[0] + fs[1]) / 2

    def std(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        return jnp.sqrt(1.0 / 12.0) * (fs[0] - fs[1])


def shake_shake(model: Any, *, form: Form = "discrete", where: Where = None) -> Any:
    """Shake-Shake on an Euler stack of `Branches` blocks; `form` and `where` as for
    `neurde.noise.regularize`."""
    return regularize(model, ShakeShake(), form=form, where=where)
