r"""The probability-flow ODE, solved by `neurde.NeuralODE` with an adaptive solver."""

from typing import Any

import diffrax
import equinox as eqx
import jax
from jaxtyping import Array, ArrayLike, Float, Int

from ..._types import Args, MaybeKey
from ...fields import AbstractField
from ...ode import NeuralODE
from .._checks import check_eps, check_integer, check_tolerances
from .._ode import solve_ode
from ..forward import AbstractForwardSDE
from ..score import ScoreFn, probability_flow_drift
from .base import AbstractSampler


class _BackwardFlow(AbstractField):
    r"""The probability-flow ODE of a batch in reversed time $\tau = -t$.

    `NeuralODE` integrates forwards only, so $dx/dt = \tilde f(t, x)$ from $T$ down to
    $\epsilon$ becomes $dx/d\tau = -\tilde f(-\tau, x)$ from $\tau = -T$ to $-\epsilon$:
    what Diffrax does itself for a backward solve, so the steps are the same.
    """

    sde: AbstractForwardSDE
    score_fn: ScoreFn

    def __call__(self, tau: Any, x: Array, args: Args) -> Array:
        drift = jax.vmap(probability_flow_drift, in_axes=(None, None, None, 0, None))
        return -drift(self.sde, self.score_fn, -tau, x, args)


class ProbabilityFlow(AbstractSampler):
    r"""Solve the probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 s_\theta(t, x)$ from
    $T$ back to $\epsilon$ with an adaptive solver (Song et al. 2021, eq. 13).

    The drift is `neurde.diffusion.probability_flow_drift`, vmapped over the batch; the
    solve is a `neurde.NeuralODE` in the reversed time $\tau = -t$, with its checks and its
    error when `max_steps` is reached. The whole batch is one state, as in the reference
    code (which calls `scipy`'s RK45 on the flattened batch): one step-size sequence and
    one NFE per batch, the count that `neurde.solver_stats` reads from the solve (steps
    times stages, rejected steps included, plus the first stage of FSAL solvers).
    Deterministic: the key is ignored.

    **Arguments:**

    - `rtol`, `atol`: tolerances of the PID controller (default $10^{-5}$ both, Song et
      al.'s); arrays, so changing them does not recompile.
    - `solver`: default `diffrax.Tsit5()`; `diffrax.Dopri5()` is the reference's RK45.
    - `eps`: the last time (default $10^{-3}$).
    - `max_steps`: the most steps the solve may take (default 4096).

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
        self.rtol, self.atol = check_tolerances(owner, rtol, atol)
        self.solver = diffrax.Tsit5() if solver is None else solver
        self.eps = check_eps(owner, eps)
        fix = "It bounds the solver's steps; raise it, or loosen `rtol` and `atol`."
        self.max_steps = check_integer(owner, "max_steps", max_steps, fix=fix)

    def run(
        self, score_fn: ScoreFn, sde: AbstractForwardSDE, x_T: Array, args: Args, key: MaybeKey
    ) -> tuple[Array, Int[Array, ""]]:
        del key
        ode = NeuralODE(
            _BackwardFlow(sde, score_fn),
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            t0=-sde.T,
            t1=-self.eps,
            max_steps=self.max_steps,
        )
        return solve_ode("ProbabilityFlow", ode, x_T, args)


__all__ = ["ProbabilityFlow"]
