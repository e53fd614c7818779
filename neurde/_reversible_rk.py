r"""McCallum and Foster's reversible Runge–Kutta scheme, with its constant-memory backward pass.

With the base step $\Phi_h(t, y) = y + \Psi_h(t, y)$ of an explicit Runge–Kutta solver, one
step of the coupled state $(y, z)$ is

$$y_{n+1} = \lambda (y_n - z_n) + \Phi_h(t_n, z_n), \qquad
z_{n+1} = y_{n+1} + z_n - \Phi_{-h}(t_{n+1}, y_{n+1})$$

(the base step taken backwards, from $t_{n+1}$ to $t_n$), and its inverse is

$$z_n = z_{n+1} - y_{n+1} + \Phi_{-h}(t_{n+1}, y_{n+1}), \qquad
y_n = (y_{n+1} - \Phi_h(t_n, z_n)) / \lambda + z_n.$$

The forward pass keeps the final $(y_N, z_N)$ only. The backward pass walks the steps in
reverse, and the two base steps of each inverse are exactly the two whose vector-Jacobian
products the step's cotangent needs, so each is evaluated once under `jax.vjp`: with
$\bar a = \bar y_{n+1} + \bar z_{n+1} - \Phi_{-h}'^{\top} \bar z_{n+1}$,
$\bar y_n = \lambda \bar a$ and $\bar z_n = \bar z_{n+1} - \lambda \bar a + \Phi_h'^{\top}
\bar a$. The parameters' cotangent is accumulated from the same products.

Reference: McCallum, Foster, "Efficient, Accurate and Stable Gradients for Neural ODEs",
arXiv:2410.11648, 2024.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from ._reversible import index_scan as _scan, read_saves, write_saves, zeros_for_none


class _Grid(eqx.Module):
    """What the solve needs besides the differentiated inputs: solver, grid, save rows."""

    solver: diffrax.AbstractSolver
    coupling: float = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    n: int = eqx.field(static=True)
    index: Array | None


def flow(solver: Any, diff: Any, static: Any, t: Any, s: Any, y: Any) -> tuple[Any, Any]:
    """One base step of `solver` from `t` to `s` (either direction) starting at `y`, and its
    embedded error estimate (`None` for a solver without one)."""
    field, args = eqx.combine(diff, static)
    term = diffrax.ODETerm(field)
    # The stages are always recomputed (`made_jump=True`): consecutive base steps start at
    # different states (z, then y), so an FSAL stage is never reusable. The solver state is
    # then unused; zeros of its shape avoid an extra evaluation in `solver.init`.
    shape = eqx.filter_eval_shape(solver.init, term, t, s, y, args)
    state = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shape)
    out = solver.step(term, t, s, y, args, state, True)
    return out[0], out[1]


def forward_step(
    solver: Any, lam: float, diff: Any, static: Any, t: Any, s: Any, y: Any, z: Any
) -> tuple[Any, Any, Any]:
    """One reversible step from `t` to `s`: `(y_{n+1}, z_{n+1}, error)`, the error the sum of
    the embedded estimates of its two base steps (`None` without them)."""
    fwd, e_fwd = flow(solver, diff, static, t, s, z)
    y1 = jax.tree.map(lambda u, v, w: lam * (u - v) + w, y, z, fwd)
    back, e_back = flow(solver, diff, static, s, t, y1)
    z1 = jax.tree.map(lambda a, b, c: a + b - c, y1, z, back)
    error = None if e_fwd is None else jax.tree.map(jnp.add, e_fwd, e_back)
    return y1, z1, error


def back_step(
    solver: Any, lam: float, diff: Any, static: Any, t: Any, s: Any, carry: Any
) -> tuple[Any, Any]:
    """One step of the backward pass from `t_{n+1} = s` to `t_n = t`: from `(y_{n+1},
    z_{n+1})` and their cotangents, `(y_n, z_n)` reconstructed and the cotangents pulled
    back, with the parameters' cotangent accumulated. Each base step is evaluated once, under
    `jax.vjp`, whose primal output is the reconstruction itself. Returns the new carry and
    `y_n` (whose save-time cotangent the caller adds to its cotangent)."""
    y1, z1, a_y, a_z, a_diff = carry

    def flow_vjp(t: Any, s: Any, y: Any) -> tuple[Any, Callable[..., Any]]:
        return jax.vjp(lambda d, u: flow(solver, d, static, t, s, u)[0], diff, y)

    back, back_vjp = flow_vjp(s, t, y1)
    z0 = jax.tree.map(lambda a, b, c: a - b + c, z1, y1, back)
    d_back, y_back = back_vjp(a_z)
    a = jax.tree.map(lambda u, v, w: u + v - w, a_y, a_z, y_back)
    fwd, fwd_vjp = flow_vjp(t, s, z0)
    y0 = jax.tree.map(lambda u, v, w: (u - v) / lam + w, y1, fwd, z0)
    d_fwd, z_fwd = fwd_vjp(a)
    a_y0 = jax.tree.map(lambda u: lam * u, a)
    a_z0 = jax.tree.map(lambda u, v, w: u - lam * v + w, a_z, a, z_fwd)
    a_diff = jax.tree.map(lambda g, u, v: g + u - v, a_diff, d_fwd, d_back)
    return (y0, z0, a_y0, a_z0, a_diff), y0


def _times(grid: _Grid, k: Any, like: Any) -> tuple[Array, Array]:
    dtype = jnp.result_type(*jax.tree.leaves(like))
    t = grid.t0 + jnp.asarray(k, dtype) * grid.dt
    return t, t + grid.dt


def _axpy(a: float, x: Any, y: Any) -> Any:
    return jax.tree.map(lambda u, v: a * u + v, x, y)


def _forward(grid: _Grid, diff: Any, static: Any, y0: Any, buffer: Any) -> Any:
    lam = grid.coupling

    def step(carry: Any, k: Array) -> Any:
        y, z, buf = carry
        t, s = _times(grid, k, y)
        y1, z1, _ = forward_step(grid.solver, lam, diff, static, t, s, y, z)
        return (y1, z1, write_saves(buf, grid.index, k + 1, y1)), None

    buffer = write_saves(buffer, grid.index, 0, y0)
    (y, z, buffer), _ = _scan(step, (y0, y0, buffer), grid.n)
    return y, z, buffer


@eqx.filter_custom_vjp
def _solve(inputs: Any, grid: _Grid, static: Any, buffer: Any) -> Any:
    diff, y0 = inputs
    y, _, buffer = _forward(grid, diff, static, y0, buffer)
    return y, buffer


@_solve.def_fwd
def _solve_fwd(perturbed: Any, inputs: Any, grid: _Grid, static: Any, buffer: Any) -> Any:
    del perturbed
    diff, y0 = inputs
    y, z, buffer = _forward(grid, diff, static, y0, buffer)
    return (y, buffer), (y, z)


@_solve.def_bwd
def _solve_bwd(
    residuals: Any,
    grad_obj: Any,
    perturbed: Any,
    inputs: Any,
    grid: _Grid,
    static: Any,
    buffer: Any,
) -> Any:
    del perturbed, buffer
    diff, _ = inputs
    y_end, z_end = residuals
    a_end, a_saved = grad_obj
    a_end = zeros_for_none(a_end, y_end)
    a_y = _axpy(1.0, read_saves(a_saved, grid.index, grid.n, y_end), a_end)
    a_z = jax.tree.map(jnp.zeros_like, y_end)
    a_diff = jax.tree.map(jnp.zeros_like, diff)

    def step(carry: Any, k: Array) -> Any:
        t, s = _times(grid, k, carry[0])
        carry, y0 = back_step(grid.solver, grid.coupling, diff, static, t, s, carry)
        a_y0 = _axpy(1.0, read_saves(a_saved, grid.index, k, y0), carry[2])
        return (*carry[:2], a_y0, *carry[3:]), None

    init = (y_end, z_end, a_y, a_z, a_diff)
    (_, _, a_y, a_z, a_diff), _ = _scan(step, init, grid.n, reverse=True)
    return a_diff, jax.tree.map(jnp.add, a_y, a_z)


def reversible_rk(
    solver: diffrax.AbstractSolver,
    coupling: float,
    field: Callable[..., Any],
    t0: float,
    dt: float,
    n: int,
    y0: PyTree[Array],
    args: Any,
    index: Array | None,
) -> tuple[PyTree[Array], PyTree[Array] | None]:
    """`(y_N, ys)`: the reversible solve's final state and its states at the save rows
    `index` (grid step numbers; `None` for no saves), differentiable in constant memory."""
    t = jnp.asarray(t0, jnp.result_type(*jax.tree.leaves(y0)))
    # Closure conversion makes the arrays a field closes over (a wrapper's closure, a
    # model's weights) leaves, so the custom backward pass can return their cotangents.
    converted = eqx.filter_closure_convert(field, t, y0, args)
    diff, static = eqx.partition((converted, args), eqx.is_inexact_array)
    grid = _Grid(solver, coupling, t0, dt, n, index)
    buffer = None
    if index is not None:
        buffer = jax.tree.map(lambda x: jnp.zeros((index.shape[0], *x.shape), x.dtype), y0)
    return _solve((diff, y0), grid, static, buffer)


__all__ = ["back_step", "flow", "forward_step", "reversible_rk"]
