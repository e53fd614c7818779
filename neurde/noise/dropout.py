r"""Dropout read as an SDE, in both directions.

- `DropoutDiffusion` (Liu et al. 2019): the continuous model's noise
  $dX = f\,dt + \sqrt{p/(1-p)}\,\operatorname{diag}(f)\,dW$, the diffusion limit of dropout.
- `ResidualDropout` (Srivastava et al. 2014 in a residual branch): the discrete draw
  $x_{n+1} = x_n + h\,(m / (1-p)) \odot f_n(x_n)$, $m_i \sim \text{Bernoulli}(1-p)$, whose
  SDE form has drift $f$ and per-coordinate standard deviation $\sqrt{p/(1-p)}\,|f|$.

`p` is the probability of *dropping* a unit, as in `eqx.nn.Dropout` (Liu et al. and Sun et
al. write the keep probability $1 - p$). Stochastic depth and ShakeDrop, whose papers
parametrize by survival, take `survival_last` instead.
"""

from typing import Any, ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from .base import AbstractBranchRegularizer, AbstractNoise, check_probability
from .stochastic_euler import Form
from .transform import Where, inject, regularize


class DropoutDiffusion(AbstractNoise):
    r"""Dropout-style diffusion $g = \sqrt{p/(1-p)}\, f$ (the drift's value times a constant).

    **Arguments:** `p`, the drop probability in (0, 1).

    Continuous models evaluate the field once for the drift and once for this diffusion in
    each step. Reference: Liu et al., "Neural SDE", 2019 (Section 3, dropout as diffusion).
    """

    p: float = eqx.field(static=True)
    needs_drift: ClassVar[bool] = True

    def __check_init__(self):
        check_probability("DropoutDiffusion", "p", self.p, "the drop probability")

    def scale(self, t: Array, y: Array, f: Array) -> Array:
        return jnp.sqrt(self.p / (1 - self.p)) * f


class ResidualDropout(AbstractBranchRegularizer):
    r"""Dropout in the residual branch: $m \odot f / (1 - p)$, $m_i \sim$ Bernoulli$(1-p)$.

    Mean $f$, variance $\frac{p}{1-p} f^2$ per coordinate (independent draws: diagonal
    noise). Inference returns $f$.

    References: Srivastava et al., "Dropout", JMLR 2014; Sun, Tao, Du, "Stochastic Training
    of Residual Networks: a Differential Equation Viewpoint", 2018.
    """

    p: float = eqx.field(static=True)
    noise: ClassVar[Literal["diagonal", "scalar"]] = "diagonal"

    def __check_init__(self):
        check_probability("ResidualDropout", "p", self.p, "the drop probability")

    def sample(self, key: PRNGKeyArray, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        (f,) = fs
        keep = jr.bernoulli(key, 1 - self.p, f.shape)
        return jnp.where(keep, f / (1 - self.p), 0.0)

    def mean(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        return fs[0]

    def std(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        return jnp.sqrt(self.p / (1 - self.p)) * jnp.abs(fs[0])


def dropout_diffusion(model: Any, p: float, **options: Any) -> Any:
    r"""Add $\sqrt{p/(1-p)}\operatorname{diag}(f)\,dW$ to `model` (continuous or Euler net);
    `options` (`solver`, `dt0`, `brownian`, `where`) are those of `neurde.noise.inject`."""
    return inject(model, DropoutDiffusion(p), **options)


def residual_dropout(model: Any, p: float, *, form: Form = "discrete", where: Where = None) -> Any:
    """Dropout (drop probability `p`) in every residual branch of an Euler stack;
    `form="sde"` uses the SDE reading instead of Bernoulli masks; `where` as for
    `neurde.noise.regularize`."""
    return regularize(model, ResidualDropout(p), form=form, where=where)
