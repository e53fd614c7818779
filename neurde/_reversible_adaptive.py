r"""The reversible Runge–Kutta scheme with adaptive steps: accepted steps recorded, replayed back.

McCallum and Foster's construction allows adaptive steps (their Section on step-size control;
the reference implementation's `ReversibleAdjoint` "supports adaptive step sizes"): the
forward pass runs a step-size controller on the reversible update and records the accepted
times $t_0 < t_1 < \dots < t_N$, a buffer of `max_steps + 1` scalars; the backward pass walks
them in reverse with the exact inverse of each step, as with constant steps. Memory is then
$O(N)$ *scalars* (the times) plus $O(1)$ states, against $O(N)$ states for backprop.

**What is estimated.** One reversible step from $t_n$ to $t_{n+1}$ takes two base steps: from
$z_n$ forwards (whose result enters $y_{n+1}$) and from $y_{n+1}$ backwards (whose result
enters $z_{n+1}$). Each has the base solver's embedded error estimate; the controller is given
their sum, the local error estimate of the pair $(y_{n+1}, z_{n+1})$, scaled by
`atol + rtol * max(|y_n|, |y_{n+1}|)` as for a plain solve. A rejected step leaves $(y, z)$
unchanged and retries with the smaller step the controller proposes.

**Gradients.** As in Diffrax (whose `PIDController` stops gradients through its step-size
factor), the accepted times are treated as constants: the gradient is that of the discrete
map with the recorded steps, exact to rounding.

Reference: McCallum, Foster, "Efficient, Accurate and Stable Gradients for Neural ODEs",
arXiv:2410.11648, 2024.
"""

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from ._reversible import read_saves, zeros_for_none
from ._reversible_rk import back_step, forward_step


class _Steps(eqx.Module):
    """The adaptive solve's settings: solver, controller, interval, save times."""

    solver: diffrax.AbstractSolver
    controller: diffrax.AbstractStepSizeController
    coupling: float = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    t0: Array
    t1: Array
    ts: Array | None


def _where(keep: Any, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)


def _next_time(steps: _Steps, t: Array, proposal: Array) -> Array:
    """The end of the next attempt: the controller's proposal, clipped to the next save
    time (so saves are on steps) and to `t1` (snapped there when within ~100 ulps)."""
    end = jnp.minimum(proposal, steps.t1)
    if steps.ts is not None:
        later = jnp.where(steps.ts > t, steps.ts, steps.t1)
        end = jnp.minimum(end, jnp.min(later))
    floor = steps.t1 - 100 * jnp.finfo(t.dtype).eps * jnp.maximum(jnp.abs(steps.t1), 1)
    return jnp.where(end > floor, steps.t1, end)


def _save(steps: _Steps, buf: Any, rows: Any, t: Array, k: Array, y: Any, ok: Any) -> Any:
    """Write `y` (reached at time `t` after `k` accepted steps) to the rows saved at `t`."""
    if steps.ts is None:
        return buf, rows
    hit = (steps.ts == t) & ok
    buf = jax.tree.map(lambda b, v: jnp.where(hit.reshape(-1, *([1] * v.ndim)), v[None], b), buf, y)
    return buf, jnp.where(hit, k, rows)


def _forward(steps: _Steps, diff: Any, static: Any, y0: Any, buf: Any) -> tuple[Any, ...]:
    """The adaptive reversible solve: final `(y, z)`, the accepted times, their count, the
    attempts, the save rows' step numbers, the saves and the result code."""
    solver, controller, lam = steps.solver, steps.controller, steps.coupling
    field, args = eqx.combine(diff, static)
    term = diffrax.ODETerm(field)
    order: Any = solver.error_order(term)
    dtype = steps.t0.dtype
    tnext, cstate = controller.init(  # pyright: ignore[reportCallIssue]
        term, steps.t0, steps.t1, y0, steps.dt0, args, solver.func, order
    )
    times = jnp.full(steps.max_steps + 1, steps.t1, dtype).at[0].set(steps.t0)
    # A row's step number, -1 until reached (every save time is reached: steps clip to it).
    rows = None if steps.ts is None else jnp.full(steps.ts.shape, -1, jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    buf, rows = _save(steps, buf, rows, steps.t0, zero, y0, True)
    tnext = _next_time(steps, steps.t0, jnp.asarray(tnext, dtype))

    def cond(state: tuple[Any, ...]) -> Any:
        t, _, _, _, _, attempts, _, _, _, _, result = state
        ok = result == diffrax.RESULTS.successful
        return (t < steps.t1) & (attempts < steps.max_steps) & ok

    def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
        t, tnext, y, z, cstate, attempts, count, times, rows, buf, _ = state
        y1, z1, error = forward_step(solver, lam, diff, static, t, tnext, y, z)
        keep, _, proposal, _, cstate, result = controller.adapt_step_size(  # pyright: ignore
            t, tnext, y, y1, args, error, order, cstate
        )
        y, z = _where(keep, y1, y), _where(keep, z1, z)
        count = count + jnp.asarray(keep, jnp.int32)
        times = times.at[count].set(jnp.where(keep, tnext, times[count]))
        buf, rows = _save(steps, buf, rows, tnext, count, y, keep)
        t = jnp.where(keep, tnext, t)
        tnext = _next_time(steps, t, jnp.asarray(proposal, dtype))
        return t, tnext, y, z, cstate, attempts + 1, count, times, rows, buf, result

    success = diffrax.RESULTS.successful
    init = (steps.t0, tnext, y0, y0, cstate, zero, zero, times, rows, buf, success)
    t, _, y, z, _, attempts, count, times, rows, buf, result = jax.lax.while_loop(cond, body, init)
    # The loop stops at `t1`, at `max_steps` attempts, or on a controller failure.
    stopped = (result == diffrax.RESULTS.successful) & (t < steps.t1)
    result = diffrax.RESULTS.where(stopped, diffrax.RESULTS.max_steps_reached, result)
    return y, z, times, count, attempts, rows, buf, result


@eqx.filter_custom_vjp
def _solve(inputs: Any, steps: _Steps, static: Any, buf: Any) -> Any:
    diff, y0 = inputs
    y, _, _, count, attempts, _, buf, result = _forward(steps, diff, static, y0, buf)
    return y, buf, (count, attempts, result)


@_solve.def_fwd
def _solve_fwd(perturbed: Any, inputs: Any, steps: _Steps, static: Any, buf: Any) -> Any:
    del perturbed
    diff, y0 = inputs
    y, z, times, count, attempts, rows, buf, result = _forward(steps, diff, static, y0, buf)
    return (y, buf, (count, attempts, result)), (y, z, times, count, rows)


@_solve.def_bwd
def _solve_bwd(
    residuals: Any, grad_obj: Any, perturbed: Any, inputs: Any, steps: _Steps, static: Any, buf: Any
) -> Any:
    del perturbed, buf
    diff, _ = inputs
    y_end, z_end, times, count, rows = residuals
    a_end, a_saved, _ = grad_obj
    a_end = zeros_for_none(a_end, y_end)
    a_y = jax.tree.map(jnp.add, read_saves(a_saved, rows, count, y_end), a_end)
    a_z = jax.tree.map(jnp.zeros_like, y_end)
    a_diff = jax.tree.map(jnp.zeros_like, diff)

    # The recorded steps replayed backwards: a loop of `count` iterations, not `max_steps`.
    def body(state: tuple[Any, Any]) -> tuple[Any, Any]:
        k, carry = state
        solver, lam = steps.solver, steps.coupling
        carry, y0 = back_step(solver, lam, diff, static, times[k], times[k + 1], carry)
        a_y0 = jax.tree.map(jnp.add, read_saves(a_saved, rows, k, y0), carry[2])
        return k - 1, (*carry[:2], a_y0, *carry[3:])

    init = (count - 1, (y_end, z_end, a_y, a_z, a_diff))
    _, (_, _, a_y, a_z, a_diff) = jax.lax.while_loop(lambda s: s[0] >= 0, body, init)
    return a_diff, jax.tree.map(jnp.add, a_y, a_z)


def reversible_adaptive(
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController,
    coupling: float,
    field: Any,
    t0: Any,
    t1: Any,
    dt0: float | None,
    max_steps: int,
    y0: PyTree[Array],
    args: Any,
    ts: Array | None,
) -> tuple[PyTree[Array], PyTree[Array] | None, tuple[Array, Array, Any]]:
    """`(y_N, ys, (accepted, attempts, result))` of the adaptive reversible solve, saving at
    `ts` (`None`: no saves), differentiable in memory independent of the number of steps
    but for the recorded times. Gradients do not flow to `t0`, `t1`, `ts` or the tolerances."""
    dtype = jnp.result_type(*jax.tree.leaves(y0))
    t0, t1 = (jax.lax.stop_gradient(jnp.asarray(x, dtype)) for x in (t0, t1))
    if ts is not None:
        ts = jax.lax.stop_gradient(ts.astype(dtype))
    converted = eqx.filter_closure_convert(field, t0, y0, args)
    diff, static = eqx.partition((converted, args), eqx.is_inexact_array)
    controller = jax.tree.map(
        lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, controller
    )
    steps = _Steps(solver, controller, coupling, dt0, max_steps, t0, t1, ts)
    buf = None
    if ts is not None:
        buf = jax.tree.map(lambda x: jnp.zeros((ts.shape[0], *x.shape), x.dtype), y0)
    y, ys, counts = _solve((diff, y0), steps, static, buf)
    # The counts and result code are not differentiable: no tangents for the checks on them.
    return y, ys, jax.tree.map(jax.lax.stop_gradient, counts)


__all__ = ["reversible_adaptive"]
