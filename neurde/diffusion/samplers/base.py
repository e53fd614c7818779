r"""What every sampler is: the abstract class, and the time grids of the fixed-step ones.

A sampler is a frozen configuration (an `eqx.Module`: number of steps, `eps`, its own
hyperparameters). `sampler.run(score_fn, sde, x_T, args, key)` pushes a batch of prior
draws `x_T` (leading axis the batch) from $t = T$ down to the data and returns the samples
and the number of score evaluations (NFE). Each step evaluates the score on the whole
batch (`jax.vmap` over examples), and one such batched evaluation counts as one NFE, the
convention of the diffusion literature. Use `neurde.diffusion.sample` rather than `run`.
"""

import abc
from typing import Any, Literal, TypeAlias

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..._types import Args
from .._checks import check_eps, check_steps
from ..forward import AbstractForwardSDE
from ..score import ScoreFn
from .grids import AbstractTimeGrid, KarrasGrid, as_time_grid, check_grid_steps

# The spacing of a sampler's times: a name, `"uniform"`, `"logsnr"` or `"edm"`, or a grid
# object (`UniformGrid`, `LogSNRGrid`, `KarrasGrid`, `OptimizedGrid`); names become objects.
TimeGrid: TypeAlias = Literal["uniform", "logsnr", "edm"] | AbstractTimeGrid


class AbstractSampler(eqx.Module):
    """A reverse-time sampler of a score-based diffusion model."""

    @abc.abstractmethod
    def run(
        self,
        score_fn: ScoreFn,
        sde: AbstractForwardSDE,
        x_T: Float[Array, "batch ..."],
        args: Args,
        key: PRNGKeyArray | None,
    ) -> tuple[Float[Array, "batch ..."], Int[Array, ""]]:
        """Push the batch `x_T` from $t = T$ to the data; return `(samples, nfe)`."""


def time_grid(
    sde: AbstractForwardSDE,
    steps: int,
    kind: TimeGrid = "uniform",
    *,
    eps: float = 1e-3,
    rho: float = 7.0,
    dtype: Any = None,
) -> Float[Array, " steps_plus_1"]:
    r"""Decreasing times $T = t_0 > t_1 > \dots > t_N = \epsilon$ for $N$ = `steps`.

    - `"uniform"` (`UniformGrid`): uniform in $t$ (Song et al. 2021; DDIM's "linear" skip).
    - `"logsnr"` (`LogSNRGrid`): uniform in $\lambda_t = \log(\alpha_t/\sigma_t)$,
      DPM-Solver's default for low-resolution data (Lu et al. 2022, Sec. 3.3, Appendix D.1).
    - `"edm"` (`KarrasGrid(rho)`): uniform in $\tilde\sigma^{1/\rho}$ with
      $\tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t}$ (Karras et al. 2022, eq. 5),
      i.e. dense near the data.
    - a grid object: its own times, e.g. a fitted `OptimizedGrid`.

    **Arguments:**

    - `sde`: the forward SDE.
    - `steps`: $N \ge 1$.
    - `kind`: the spacing, a name or a grid object.
    - `eps`: the last time.
    - `rho`: the exponent of `"edm"` (a `KarrasGrid` object carries its own).
    - `dtype`: the float dtype of the result.

    **Returns:**

    An array of `steps + 1` times.
    """
    owner = "time_grid"
    grid = KarrasGrid(rho) if isinstance(kind, str) and kind == "edm" else kind
    grid = as_time_grid(owner, grid, "kind")
    steps, eps = check_steps(owner, steps), check_eps(owner, eps)
    check_grid_steps(owner, grid, steps)
    dtype = jnp.result_type(float) if dtype is None else dtype
    return grid(sde, steps, eps, dtype)


__all__ = ["AbstractSampler", "TimeGrid", "time_grid"]
