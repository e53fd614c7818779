"""Neural ordinary differential equations: `dy/dt = f_theta(t, y, args)` solved by Diffrax."""

from typing import Any

import diffrax
import equinox as eqx
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from ._solve import (
    default_controller,
    resolve_adjoint,
    resolve_interval,
    run_solve,
    squeeze_final,
)
from ._types import Args, VectorField
from ._validation import (
    check_field_output,
    check_interval,
    check_positive,
    check_state,
)
from .fields import AbstractField, as_field
from .stats import solver_stats
from .tolerances import Tolerances


def has_error_estimate(solver: diffrax.AbstractSolver) -> bool:
    """Whether `solver` estimates its local error, as adaptive step sizing needs."""
    tableau = getattr(solver, "tableau", None)
    if isinstance(tableau, diffrax.ButcherTableau):
        return bool(np.any(np.asarray(tableau.b_error) != 0))
    return isinstance(solver, diffrax.AbstractAdaptiveSolver) and not isinstance(
        solver, diffrax.Euler
    )


def resolve_controller(
    owner: str,
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController | None,
    dt0: float | None,
) -> diffrax.AbstractStepSizeController | None:
    """Check the solver/controller/dt0 combination; `None` means PID from the tolerances."""
    check_positive(owner, "dt0", dt0, "Use a positive initial or constant step size.")
    adaptive_solver = has_error_estimate(solver)
    if controller is None and not adaptive_solver:
        controller = diffrax.ConstantStepSize()
    if isinstance(controller, diffrax.ConstantStepSize) and dt0 is None:
        raise ValueError(
            f"{owner}: {type(solver).__name__} runs with a constant step size, so `dt0` is "
            "needed (e.g. `dt0=0.05`); or pick an adaptive solver such as `diffrax.Tsit5()`."
        )
    adaptive_controller = controller is None or isinstance(controller, diffrax.PIDController)
    if adaptive_controller and not adaptive_solver:
        raise ValueError(
            f"{owner}: {type(solver).__name__} has no error estimate, so it cannot be used "
            "with an adaptive step-size controller. Pass "
            "`stepsize_controller=diffrax.ConstantStepSize()` and `dt0`, or use an adaptive "
            "solver such as `diffrax.Tsit5()`."
        )
    return controller


class NeuralODE(eqx.Module):
    r"""A neural ordinary differential equation $\dot y = f_\theta(t, y, \text{args})$.

    Calling the model solves the initial value problem from `y0` at `t0` and returns the
    state at `t1`, or at each of the save times `ts`. The state may be any PyTree of floating
    arrays; the field must map it to a PyTree of the same shapes. Solver configuration is data:
    every field below can be overridden with `eqx.tree_at` or at construction, and the
    tolerances are arrays so changing them does not recompile.

    **Arguments:**

    - `field`: the vector field `f(t, y, args)`, an `AbstractField` or any callable.
    - `solver`: a Diffrax solver (default `diffrax.Tsit5()`).
    - `stepsize_controller`: a Diffrax controller; `None` (default) means a
      `diffrax.PIDController` with the `rtol`/`atol` below for adaptive solvers and
      `diffrax.ConstantStepSize()` for solvers without an error estimate (e.g. `neurde.RK4`).
    - `rtol`, `atol`: tolerances of the default adaptive controller.
    - `adjoint`: how gradients are computed: `"backprop"` (default; backprop through the
      solver with recursive checkpointing), `"direct"`, `"adjoint"` (the continuous adjoint,
      `diffrax.BacksolveAdjoint`), or any `diffrax.AbstractAdjoint`. The continuous adjoint
      solves a second ODE backwards, so its gradient carries that solve's error: at training
      tolerances (rtol 1e-3) it can differ from backprop by several percent; tighten `rtol`
      and `atol` when using it. Switch on a built model with
      `eqx.tree_at(lambda m: m.adjoint, model, diffrax.BacksolveAdjoint())`.
    - `t0`, `t1`: the time interval. `t1=None` means "the last save time" and then every call
      must pass `ts`.
    - `dt0`: initial step (adaptive) or the step (constant); `None` lets Diffrax choose.
    - `max_steps`: the most steps one solve may take.
    - `throw`: raise an error when a solve fails (default). With `throw=False`, `solve`
      returns the Diffrax solution with its `result` code for the caller to inspect.

    References: Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018.
    """

    field: AbstractField
    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController | None
    tolerances: Tolerances
    adjoint: diffrax.AbstractAdjoint
    t0: float = eqx.field(static=True)
    t1: float | None = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    def __init__(
        self,
        field: AbstractField | VectorField,
        *,
        solver: diffrax.AbstractSolver | None = None,
        stepsize_controller: diffrax.AbstractStepSizeController | None = None,
        rtol: Float[ArrayLike, ""] = 1e-3,
        atol: Float[ArrayLike, ""] = 1e-6,
        adjoint: str | diffrax.AbstractAdjoint = "backprop",
        t0: float = 0.0,
        t1: float | None = None,
        dt0: float | None = None,
        max_steps: int = 4096,
        throw: bool = True,
    ):
        owner = "NeuralODE"
        self.field = as_field(field)
        self.solver = diffrax.Tsit5() if solver is None else solver
        self.stepsize_controller = resolve_controller(owner, self.solver, stepsize_controller, dt0)
        self.tolerances = Tolerances(rtol, atol)
        self.adjoint = resolve_adjoint(owner, adjoint)
        if t1 is not None:
            check_interval(owner, t0, t1)
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"{owner}: `max_steps` must be an integer >= 1, got {max_steps!r}.")
        self.t0 = float(t0)
        self.t1 = None if t1 is None else float(t1)
        self.dt0 = None if dt0 is None else float(dt0)
        self.max_steps = max_steps
        self.throw = throw

    def controller(self) -> diffrax.AbstractStepSizeController:
        """The step-size controller a solve uses (the default PID built from the tolerances)."""
        return default_controller(
            self.stepsize_controller, self.tolerances.rtol, self.tolerances.atol
        )

    def solve(
        self,
        y0: PyTree[Float[ArrayLike, "..."]],
        ts: Float[ArrayLike, " times"] | None = None,
        *,
        args: Args = None,
        t0: Float[ArrayLike, ""] | None = None,
        t1: Float[ArrayLike, ""] | None = None,
    ) -> diffrax.Solution:
        """Solve from `y0` and return the full `diffrax.Solution` (ys, ts, stats, result).

        Arguments are as for `__call__`. Use `stats(solution)` for the number of function
        evaluations.
        """
        owner = "NeuralODE"
        start, end = resolve_interval(owner, self.t0, self.t1, t0, t1, ts)
        state = check_state(owner, y0)
        check_field_output(owner, "vector field", self.field, start, state, args, want=state)
        return run_solve(
            owner, self, diffrax.ODETerm(self.field), self.solver, start, end, state, args, ts
        )

    def __call__(
        self,
        y0: PyTree[Float[ArrayLike, "..."]],
        ts: Float[ArrayLike, " times"] | None = None,
        *,
        args: Args = None,
        t0: Float[ArrayLike, ""] | None = None,
        t1: Float[ArrayLike, ""] | None = None,
        key: Any = None,
    ) -> PyTree[Float[Array, "..."]]:
        """Solve from one (unbatched) initial state `y0`.

        **Arguments:**

        - `y0`: the initial state at `t0`, any PyTree of floating arrays.
        - `ts`: save times, strictly increasing inside `[t0, t1]`; `None` returns y(t1).
        - `args`: passed to the field as its third argument.
        - `t0`, `t1`: override the model's interval for this call (may be traced).
        - `key`: ignored (deterministic model); accepted so ODEs and SDEs share a signature.

        **Returns:**

        The state at `t1` (same structure as `y0`), or, with `ts`, the states at every save
        time stacked on a leading axis.
        """
        del key
        solution = self.solve(y0, ts, args=args, t0=t0, t1=t1)
        return squeeze_final(solution.ys) if ts is None else solution.ys

    def stats(self, solution: diffrax.Solution) -> dict[str, Int[Array, ""]]:
        """Number of function evaluations and steps of a solve made by this model."""
        return solver_stats(solution, self.solver)


__all__ = ["NeuralODE"]
