"""Pieces of a Diffrax solve shared by `NeuralODE` and `NeuralSDE`."""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from ._validation import check_interval, check_times, is_concrete

_ADJOINTS = {
    "backprop": "diffrax.RecursiveCheckpointAdjoint() (backprop through the solver)",
    "direct": "diffrax.DirectAdjoint() (forward- and reverse-mode through the solver)",
    "adjoint": "diffrax.BacksolveAdjoint() (continuous adjoint, O(1) memory)",
}


def resolve_adjoint(owner: str, adjoint: Any) -> diffrax.AbstractAdjoint:
    """Map `"backprop" | "direct" | "adjoint"` (or a Diffrax adjoint) to a Diffrax adjoint."""
    if isinstance(adjoint, diffrax.AbstractAdjoint):
        return adjoint
    if adjoint == "backprop":
        return diffrax.RecursiveCheckpointAdjoint()
    if adjoint == "direct":
        return diffrax.DirectAdjoint()
    if adjoint in ("adjoint", "backsolve"):
        return diffrax.BacksolveAdjoint()
    choices = "\n".join(f"  {k!r}: {v}" for k, v in _ADJOINTS.items())
    raise ValueError(
        f"{owner}: unknown `adjoint={adjoint!r}`. Choose one of\n{choices}\n"
        "or pass any `diffrax.AbstractAdjoint` instance."
    )


def fixed_step_adjoint(
    adjoint: diffrax.AbstractAdjoint,
    controller: diffrax.AbstractStepSizeController,
    t0: Any,
    t1: Any,
    dt0: Any,
) -> diffrax.AbstractAdjoint:
    """Give backprop one checkpoint per step when the number of steps is known.

    With `checkpoints=None`, Diffrax sizes its recursive checkpointing for `max_steps` and
    recomputes steps on the backward pass; with a constant step size and concrete times the
    exact count is known, and one checkpoint per step saves those recomputations (a few
    percent of a training step in benchmarks/ode_step.py).
    """
    if not (
        type(adjoint) is diffrax.RecursiveCheckpointAdjoint
        and adjoint.checkpoints is None
        and isinstance(controller, diffrax.ConstantStepSize)
        and dt0 is not None
        and all(is_concrete(x) for x in (t0, t1, dt0))
    ):
        return adjoint
    # +1 guards against a final sliver step from floating-point rounding of t0 + n dt0.
    steps = math.ceil((float(t1) - float(t0)) / float(dt0)) + 1
    return diffrax.RecursiveCheckpointAdjoint(checkpoints=steps)


def raise_on_failure(owner: str, solution: diffrax.Solution, max_steps: int) -> diffrax.Solution:
    """Turn an unsuccessful solve into an error that says what to try."""
    max_steps_msg = (
        f"{owner}: the solver reached `max_steps={max_steps}` before the end of the interval. "
        "Try: raising `max_steps`; loosening the tolerances (`rtol`, `atol`); an implicit "
        "solver such as `diffrax.Kvaerno5()` if the dynamics are stiff; or regularizing the "
        "field so it stays smooth."
    )
    other_msg = (
        f"{owner}: the solve failed (step size underflow or a non-finite state). Check the "
        "field for NaN/inf and try tighter `max_steps`-free settings, smaller `dt0`, or an "
        "implicit solver."
    )
    result = solution.result
    is_max_steps = result == diffrax.RESULTS.max_steps_reached
    is_other = (result != diffrax.RESULTS.successful) & jnp.logical_not(is_max_steps)
    ys = eqx.error_if(solution.ys, is_max_steps, max_steps_msg)
    ys = eqx.error_if(ys, is_other, other_msg)
    return eqx.tree_at(lambda s: s.ys, solution, ys, is_leaf=lambda x: x is None)


def squeeze_final(ys: Any) -> Any:
    """Drop the length-1 time axis of a solution saved only at `t1`."""
    return jax.tree.map(lambda y: y[0], ys)


def default_controller(
    controller: diffrax.AbstractStepSizeController | None, rtol: Any, atol: Any
) -> diffrax.AbstractStepSizeController:
    """`controller`, or a PID controller from the (non-trainable) tolerance arrays."""
    if controller is not None:
        return controller
    rtol, atol = jax.lax.stop_gradient(rtol), jax.lax.stop_gradient(atol)
    return diffrax.PIDController(rtol=rtol, atol=atol)


def resolve_interval(
    owner: str, model_t0: float, model_t1: float | None, t0: Any, t1: Any, ts: Any
) -> tuple[Any, Any]:
    """The call's `(t0, t1)`: call arguments over model fields, else the last save time."""
    start = model_t0 if t0 is None else t0
    end = model_t1 if t1 is None else t1
    if end is None:
        if ts is None:
            raise ValueError(
                f"{owner}: no end time. Pass save times `ts=...`, or build the model with "
                f"`t1=...` (e.g. `{owner}(..., t1=1.0)`), or call with `t1=...`."
            )
        end = jnp.asarray(ts)[-1]
    check_interval(owner, start, end)
    return start, end


def run_solve(
    owner: str,
    model: Any,
    terms: Any,
    solver: diffrax.AbstractSolver,
    start: Any,
    end: Any,
    y0: Any,
    args: Any,
    ts: Any,
) -> diffrax.Solution:
    """`diffrax.diffeqsolve` with the model's configuration, and neurde's failure message."""
    if ts is None:
        saveat = diffrax.SaveAt(t1=True)
    else:
        saveat = diffrax.SaveAt(ts=check_times(owner, ts, start, end))
    controller = model.controller()
    solution = diffrax.diffeqsolve(
        terms,
        solver,
        t0=start,
        t1=end,
        dt0=model.dt0,
        y0=y0,
        args=args,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=fixed_step_adjoint(model.adjoint, controller, start, end, model.dt0),
        max_steps=model.max_steps,
        throw=False,
    )
    if model.throw:
        solution = raise_on_failure(owner, solution, model.max_steps)
    return solution
