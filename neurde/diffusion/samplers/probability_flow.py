r"""The probability-flow ODE, solved by Diffrax with an adaptive solver."""

from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._types import Args
from ..._validation import check_positive
from ...stats import solver_stats
from ..forward import AbstractForwardSDE
from ..score import ScoreFn
from .base import AbstractSampler, bind_args, check_sampling_eps, check_steps


class ProbabilityFlow(AbstractSampler):
    r"""Solve the probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 s_\theta(t, x)$ from
    $T$ back to $\epsilon$ with an adaptive Diffrax solver (Song et al. 2021, eq. 13).

    The whole batch is one state, as in the reference code (which calls `scipy`'s RK45 on
    the flattened batch): one step-size sequence and one NFE per batch, the count that
    `neurde.solver_stats` reads from the solve (steps times stages, rejected steps
    included, plus the first stage of FSAL solvers). Deterministic: the key is ignored.

    **Arguments:**

    - `rtol`, `atol`: tolerances of the PID controller (default $10^{-5}$ both, Song et
      al.'s); arrays, so changing them does not recompile.
    - `solver`: default `diffrax.Tsit5()`; `diffrax.Dopri5()` is the reference's RK45.
    - `eps`: the last time (default $10^{-3}$).
    - `max_steps`: Diffrax's step limit (default 4096).

    References: Song et al., ICLR 2021, Sec. 4.3; Chen et al., "Neural Ordinary Differential
    Equations", NeurIPS 2018; Kidger, "On Neural Differential Equations", 2021 (Diffrax).
    """

    rtol: Float[Array, ""]
    atol: Float[Array, ""]
    solver: diffrax.AbstractSolver
    eps: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def __init__(
        self,
        *,
        rtol: Float[ArrayLike, ""] = 1e-5,
        atol: Float[ArrayLike, ""] = 1e-5,
        solver: diffrax.AbstractSolver | None = None,
        eps: float = 1e-3,
        max_steps: int = 4096,
    ):
        owner = "ProbabilityFlow"
        self.rtol, self.atol = jnp.asarray(rtol), jnp.asarray(atol)
        check_positive(owner, "rtol", self.rtol)
        check_positive(owner, "atol", self.atol)
        self.solver = diffrax.Tsit5() if solver is None else solver
        self.eps = check_sampling_eps(owner, eps)
        self.max_steps = check_steps(owner, max_steps, "max_steps")

    def run(
        self,
        score_fn: ScoreFn,
        sde: AbstractForwardSDE,
        x_T: Array,
        args: Args,
        key: PRNGKeyArray | None,
    ) -> tuple[Array, Array]:
        del key
        score = bind_args(score_fn, args)

        def field(t: Any, x: Array, _: Any) -> Array:
            return sde.drift_coeff(t) * x - 0.5 * sde.diffusion(t) ** 2 * score(t, x)

        dtype = x_T.dtype
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            self.solver,
            t0=jnp.asarray(sde.T, dtype),
            t1=jnp.asarray(self.eps, dtype),
            dt0=None,
            y0=x_T,
            stepsize_controller=diffrax.PIDController(
                rtol=self.rtol.astype(dtype), atol=self.atol.astype(dtype)
            ),
            max_steps=self.max_steps,
        )
        ys: Any = solution.ys
        return ys[0], solver_stats(solution, self.solver)["nfe"]


__all__ = ["ProbabilityFlow"]
