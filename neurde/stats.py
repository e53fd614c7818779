"""Solver statistics: steps taken, accepted, rejected, and vector-field evaluations.

Most of the count follows from Diffrax's own statistics: every attempted step, accepted or
rejected, costs the same number of evaluations. What does not is the *restart* of a solver
that reuses a field value from the previous step (the last stage of an FSAL Runge–Kutta
method, the last kick of `neurde.Leapfrog`): Diffrax evaluates the first stage afresh on
the first step and after a jump of the state (`jump_ts`), and a rejected step is retried
from the solver state it started with, so every *rejection* of such a restarting step costs
another fresh first stage. Neither is in Diffrax's statistics, so a solve that can reject or
jump runs with `counting(...)`'s controller, which counts those steps as they are decided.
"""

from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
from diffrax import ButcherTableau
from jaxtyping import Array, Bool, Int

from .solvers import evaluations_at_start, evaluations_per_step


def _fsal(solver: diffrax.AbstractSolver) -> bool:
    """Whether `solver` stores its last stage for the next step (explicit FSAL Runge–Kutta)."""
    tableau = getattr(solver, "tableau", None)
    return isinstance(tableau, ButcherTableau) and tableau.fsal and not tableau.implicit


class _Restarts(eqx.Module):
    """The counting controller's state: the wrapped controller's state, whether the next
    attempted step evaluates the solver's first stage afresh, and how many steps did."""

    inner: Any
    pending: Bool[Array, ""]
    restarts: Int[Array, ""]


class _CountingController(diffrax.AbstractStepSizeController):
    """A step-size controller that decides as `controller` does and counts restarts.

    Diffrax keeps the solver's state of a rejected step for the retry and sets `made_jump`
    for the step after a jump, so the step after an attempt restarts exactly when that
    attempt was rejected and restarted itself, or was accepted and the controller jumped.
    """

    controller: diffrax.AbstractStepSizeController
    restart_first: bool = eqx.field(static=True)

    def wrap(self, direction: Any) -> "_CountingController":
        return _CountingController(self.controller.wrap(direction), self.restart_first)

    def init(
        self,
        terms: Any,
        t0: Any,
        t1: Any,
        y0: Any,
        dt0: Any,
        args: Any,
        func: Any,
        error_order: Any,
    ) -> tuple[Any, _Restarts]:
        tnext, inner = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        zero = jnp.zeros((), jnp.int32)
        return tnext, _Restarts(inner, jnp.asarray(self.restart_first), zero)

    def adapt_step_size(
        self,
        t0: Any,
        t1: Any,
        y0: Any,
        y1_candidate: Any,
        args: Any,
        y_error: Any,
        error_order: Any,
        controller_state: _Restarts,
    ) -> tuple[Any, Any, Any, Any, _Restarts, Any]:
        state = controller_state
        keep, next_t0, next_t1, jump, inner, result = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state.inner
        )
        restarts = state.restarts + state.pending.astype(jnp.int32)
        pending = jnp.where(keep, jump, state.pending)
        return keep, next_t0, next_t1, jump, _Restarts(inner, pending, restarts), result


def counting(
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController,
    saveat: diffrax.SaveAt,
    adjoint: diffrax.AbstractAdjoint,
) -> tuple[diffrax.AbstractStepSizeController, diffrax.SaveAt]:
    """The controller and `SaveAt` of a solve whose NFE `solver_stats` can count exactly.

    Only a solver that reuses a field value across steps, under a controller that can
    reject or jump, needs the count; any other pair is returned unchanged (constant steps
    never reject, and every step of a solver without reuse costs the same).
    `diffrax.ImplicitAdjoint` accepts no saved controller state: there the NFE leaves out
    the restarts after rejected first steps and jumps.
    """
    # Implicit solvers have no known cost per step (NFE -1), so nothing to count there.
    reuses = evaluations_at_start(solver) > 0 and evaluations_per_step(solver) is not None
    fixed = isinstance(controller, diffrax.ConstantStepSize | diffrax.StepTo)
    if not reuses or fixed or isinstance(adjoint, diffrax.ImplicitAdjoint):
        return controller, saveat
    counted = _CountingController(controller, restart_first=_fsal(solver))
    return counted, eqx.tree_at(lambda s: s.controller_state, saveat, True)


def solver_stats(
    solution: diffrax.Solution,
    solver: diffrax.AbstractSolver,
) -> dict[str, Int[Array, ""]]:
    """Statistics of one solve, including the number of function evaluations (NFE).

    NFE counts evaluations of the (drift) vector field in the forward solve, exactly:
    `num_steps * evaluations_per_step(solver)` (rejected steps cost as much as accepted
    ones), plus the evaluations that restart a solver reusing a value across steps (FSAL
    Runge–Kutta methods such as Tsit5, Dopri5, Dopri8, Bosh3; `neurde.Leapfrog`): one before
    the first step and, when the solve ran with `counting`'s controller, one more for each
    rejection of the first step and for each step after a jump. The count equals a counting
    callback in the field (tests/test_nfe_exact.py).

    NFE is per example: under `jax.vmap`, Diffrax steps the whole batch while any example
    is still integrating, and restarts every example's first stage when any one needs it.
    In batch mode (`neurde.batched(model)`) the batch is one solve, and the counts are that
    solve's, shared by the batch: one step-size sequence, each evaluation of the batched
    field evaluating every example once (so the evaluations of one example's field are
    `nfe`, and of the batch `B * nfe`).
    The backward pass of a gradient is not in these statistics: backprop through the solver
    re-evaluates checkpointed steps, and `diffrax.BacksolveAdjoint` solves a second ODE
    backwards with its own (vector-Jacobian) evaluations; `nfe` is the forward solve's cost,
    the same with or without a gradient. `neurde.count_evaluations` counts the whole
    computation, forward evaluations and vector-Jacobian products of the backward pass.

    **Arguments:**

    - `solution`: what `diffrax.diffeqsolve` returned.
    - `solver`: the solver that produced it.

    **Returns:**

    A dict with integer scalars `nfe` (-1 when the solver's cost per step is unknown, e.g.
    implicit solvers), `num_steps`, `num_accepted_steps`, `num_rejected_steps`.
    """
    stats = solution.stats
    num_steps = jnp.asarray(stats["num_steps"])
    per_step = evaluations_per_step(solver)
    if per_step is None:
        nfe = jnp.full_like(num_steps, -1)
    elif isinstance(solution.controller_state, _Restarts):
        # The FSAL first stage is among the counted restarts; other reuse (Leapfrog's first
        # kick) is evaluated once in the solver's `init`, before any step.
        in_init = evaluations_at_start(solver) - int(_fsal(solver))
        nfe = num_steps * per_step + in_init + solution.controller_state.restarts
    else:
        nfe = num_steps * per_step + evaluations_at_start(solver)
    return {
        "nfe": nfe,
        "num_steps": num_steps,
        "num_accepted_steps": jnp.asarray(stats["num_accepted_steps"]),
        "num_rejected_steps": jnp.asarray(stats["num_rejected_steps"]),
    }


__all__ = ["counting", "solver_stats"]
