"""Neural ordinary differential equations: `dy/dt = f_theta(t, y, args)` solved by Diffrax."""

import diffrax
import equinox as eqx
from jaxtyping import ArrayLike, Float

from ._config import configuration, init_settings
from ._solve import model_problem
from ._types import Args, Input, MaybeKey, SaveTimes, VectorField
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
      and `atol` when using it. For the same reason it is the one adjoint whose gradient
      of a `vmap`ped batch is not exactly the mean of per-example gradients with adaptive
      steps (1e-7 relative at rtol 1e-5, shrinking with the tolerance;
      tests/test_batch_invariance.py); with constant steps it is. `"reversible"` (or
      `neurde.Reversible(coupling)`): exact gradients in constant memory from McCallum and
      Foster's reversible version of an explicit Runge–Kutta solver, with constant steps
      (`stepsize_controller=diffrax.ConstantStepSize()`, `dt0` dividing the interval, `ts` on
      the step grid) or adaptive ones (`diffrax.PIDController`, accepted steps recorded and
      replayed); see `neurde.Reversible` for its cost and stability. Switch on a built
      model with `eqx.tree_at(lambda m: m.adjoint, model, diffrax.BacksolveAdjoint())`.
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
        solver = diffrax.Tsit5() if solver is None else solver
        settings = (stepsize_controller, rtol, atol, adjoint, t0, t1, dt0, max_steps, throw)
        init_settings(self, "NeuralODE", solver, *settings)
        self.field = as_field(field)
        configuration("NeuralODE", self)

    def problem(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> Problem:
        """The ODE $\\dot y = f(t, y, \\text{args})$ on the model's interval (no randomness)."""
        del y0, args, key
        return model_problem("NeuralODE", self, self.field, ts)
