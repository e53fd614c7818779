"""Neural ordinary differential equations: `dy/dt = f_theta(t, y, args)` solved by Diffrax."""

from typing import Any

import diffrax
import equinox as eqx
from jaxtyping import ArrayLike, Float, PRNGKeyArray, PyTree

from ._config import check_tolerances_and_controller, configuration, resolve_adjoint
from ._solve import resolve_interval
from ._types import Args, VectorField
from .fields import AbstractField, as_field
from .model import AbstractContinuousModel
from .problem import Problem
from .tolerances import Tolerances


class NeuralODE(AbstractContinuousModel):
    r"""A neural ordinary differential equation $\dot y = f_\theta(t, y, \text{args})$.

    Calling the model solves the initial value problem from `y0` at `t0` and returns the
    state at `t1`, or at each of the save times `ts`; `solve` returns the full
    `neurde.ModelSolution` (with `stats["nfe"]`). The state may be any PyTree of floating
    arrays; the field must map it to a PyTree of the same shapes.

    Solver configuration is data: the solver, the step-size controller, the tolerances and
    the adjoint can be changed on a built model with `eqx.tree_at` (the settings are checked
    again, with the same messages, each time a solve is traced), and the tolerances are
    arrays so changing them does not recompile. The interval, `dt0`, `max_steps` and `throw`
    are static: build a new model to change them.

    **Arguments:**

    - `field`: the vector field `f(t, y, args)`, an `AbstractField` or any callable.
    - `solver`: a Diffrax solver (default `diffrax.Tsit5()`).
    - `stepsize_controller`: a Diffrax controller, which carries its own tolerances. `None`
      (default) means a `diffrax.PIDController` with `rtol`/`atol` for solvers with an
      error estimate and `diffrax.ConstantStepSize()` for the others (e.g. `neurde.RK4`).
    - `rtol`, `atol`: tolerances of the default controller (default `1e-3`, `1e-6`). Given
      together with a `stepsize_controller` they would be ignored, so that is an error.
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
      returns the failed solution with its `result` code for the caller to inspect.

    References: Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018.
    """

    field: AbstractField
    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController | None
    tolerances: Tolerances | None
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
        rtol: Float[ArrayLike, ""] | None = None,
        atol: Float[ArrayLike, ""] | None = None,
        adjoint: str | diffrax.AbstractAdjoint = "backprop",
        t0: float = 0.0,
        t1: float | None = None,
        dt0: float | None = None,
        max_steps: int = 4096,
        throw: bool = True,
    ):
        owner = "NeuralODE"
        check_tolerances_and_controller(owner, stepsize_controller, rtol, atol)
        self.field = as_field(field)
        self.solver = diffrax.Tsit5() if solver is None else solver
        self.stepsize_controller = stepsize_controller
        self.tolerances = (
            None
            if stepsize_controller is not None
            else Tolerances(1e-3 if rtol is None else rtol, 1e-6 if atol is None else atol)
        )
        self.adjoint = resolve_adjoint(owner, adjoint)
        self.t0 = float(t0)
        self.t1 = None if t1 is None else float(t1)
        self.dt0 = None if dt0 is None else float(dt0)
        self.max_steps = max_steps
        self.throw = throw
        self._configuration()

    def _configuration(self) -> tuple[Any, Any, Any]:
        return configuration(
            "NeuralODE",
            solver=self.solver,
            stepsize_controller=self.stepsize_controller,
            tolerances=self.tolerances,
            adjoint=self.adjoint,
            dt0=self.dt0,
            max_steps=self.max_steps,
            t0=self.t0,
            t1=self.t1,
        )

    def problem(
        self,
        y0: PyTree[Any],
        ts: Any,
        *,
        args: Args,
        key: PRNGKeyArray | None,
    ) -> Problem:
        """The ODE $\\dot y = f(t, y, \\text{args})$ on the model's interval (no randomness)."""
        del y0, args, key
        solver, controller, adjoint = self._configuration()
        t0, t1 = resolve_interval("NeuralODE", self.t0, self.t1, ts)
        return Problem(
            drift=self.field,
            t0=t0,
            t1=t1,
            solver=solver,
            stepsize_controller=controller,
            adjoint=adjoint,
            dt0=self.dt0,
            max_steps=self.max_steps,
            throw=self.throw,
            owner="NeuralODE",
        )
