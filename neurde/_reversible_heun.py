r"""Reversible Heun for SDEs (Stratonovich) with its exact constant-memory backward pass.

With $v = (f, g)$ the drift and diffusion and $P(v, \Delta W) = f\,\Delta t + g\,\Delta W$,
one step on the state $(y, \hat y, v)$, $\hat y_0 = y_0$, $v_0 = v(t_0, y_0)$, is

$$\hat y_{n+1} = 2 y_n - \hat y_n + P(v_n, \Delta W_n), \quad
v_{n+1} = v(t_{n+1}, \hat y_{n+1}), \quad
y_{n+1} = y_n + \tfrac12 P(v_n + v_{n+1}, \Delta W_n),$$

the steps of `diffrax.ReversibleHeun`, and its inverse is
$\hat y_n = 2 y_{n+1} - \hat y_{n+1} - P(v_{n+1}, \Delta W_n)$, $v_n = v(t_n, \hat y_n)$,
$y_n = y_{n+1} - \tfrac12 P(v_n + v_{n+1}, \Delta W_n)$.

The backward pass reconstructs $(y_n, \hat y_n, v_n)$ step by step and evaluates $v$ at
$\hat y_n$ under `jax.vjp` once: the value is the reconstruction's and the product
propagates the cotangent of $v_n$, complete by then because the only use of $v_n$ not yet
transposed (in the update of $y_n$) is linear. So a backward step costs one evaluation and
one vector-Jacobian product of $v$, like checkpointed backprop, in memory independent of the
number of steps. The Brownian increments are redrawn from the key (`jr.fold_in(key, k)`),
not stored.

Reference: Kidger, Foster, Li, Lyons, "Efficient and Accurate Gradients for Neural SDEs",
NeurIPS 2021.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._reversible import index_scan as _scan, read_saves, write_saves, zeros_for_none
from .brownian import brownian_increment


class _Grid(eqx.Module):
    """The grid, the save rows and the Brownian increments (a key or given increments)."""

    t0: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    n: int = eqx.field(static=True)
    noise: str | None = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    index: Array | None
    key: PRNGKeyArray | None
    increments: Array | None

    def increment(self, k: Any, dtype: Any) -> Array | None:
        if self.noise is None:
            return None
        if self.increments is not None:
            return self.increments[k].astype(dtype)
        assert self.key is not None
        return brownian_increment(self.key, k, self.shape, self.dt, dtype)

    def times(self, k: Any, dtype: Any) -> tuple[Array, Array]:
        t = self.t0 + jnp.asarray(k, dtype) * self.dt
        return t, t + self.dt


def _prod(grid: _Grid, v: tuple[Any, ...], dw: Any) -> Array:
    """$P(v, \\Delta W) = f \\Delta t + g \\Delta W$ for the noise structure."""
    dy = v[0] * grid.dt
    if grid.noise is None:
        return dy
    g = v[1]
    return dy + (g @ dw if grid.noise == "general" else g * dw)


def _prod_t(grid: _Grid, a: Array, dw: Any) -> tuple[Any, ...]:
    """The transpose of `_prod` in `v`: the cotangent of `(f, g)` from that of the product."""
    if grid.noise is None:
        return (a * grid.dt,)
    dg = jnp.outer(a, dw) if grid.noise == "general" else a * dw
    return (a * grid.dt, dg)


def _vf(diff: Any, static: Any, t: Any, y: Array) -> tuple[Any, ...]:
    fields, args = eqx.combine(diff, static)
    return fields(t, y, args)


def _forward(grid: _Grid, diff: Any, static: Any, y0: Array, buffer: Any) -> Any:
    dtype = y0.dtype

    def step(carry: Any, k: Array) -> Any:
        y, yh, v, buf = carry
        _, s = grid.times(k, dtype)
        dw = grid.increment(k, dtype)
        yh1 = 2 * y - yh + _prod(grid, v, dw)
        v1 = _vf(diff, static, s, yh1)
        y1 = y + 0.5 * _prod(grid, jax.tree.map(jnp.add, v, v1), dw)
        return (y1, yh1, v1, write_saves(buf, grid.index, k + 1, y1)), None

    v0 = _vf(diff, static, jnp.asarray(grid.t0, dtype), y0)
    buffer = write_saves(buffer, grid.index, 0, y0)
    (y, yh, v, buffer), _ = _scan(step, (y0, y0, v0, buffer), grid.n)
    return (y, yh, v), buffer


@eqx.filter_custom_vjp
def _solve(inputs: Any, grid: _Grid, static: Any, buffer: Any) -> Any:
    diff, y0 = inputs
    (y, _, _), buffer = _forward(grid, diff, static, y0, buffer)
    return y, buffer


@_solve.def_fwd
def _solve_fwd(perturbed: Any, inputs: Any, grid: _Grid, static: Any, buffer: Any) -> Any:
    del perturbed
    diff, y0 = inputs
    state, buffer = _forward(grid, diff, static, y0, buffer)
    return (state[0], buffer), state


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
    y_end, yh_end, v_end = residuals
    dtype = y_end.dtype
    a_end, a_saved = grad_obj
    a_end = zeros_for_none(a_end, y_end)

    def vf_vjp(t: Any, yh: Array) -> tuple[Any, Callable[..., Any]]:
        return jax.vjp(lambda d, u: _vf(d, static, t, u), diff, yh)

    # v_N enters y_N only (through the last update): its product is taken once, here.
    a_y = a_end + read_saves(a_saved, grid.index, grid.n, y_end)
    t_end = grid.times(grid.n - 1, dtype)[1]
    _, vjp_end = vf_vjp(t_end, yh_end)
    a_diff, a_yh = vjp_end(_prod_t(grid, 0.5 * a_y, grid.increment(grid.n - 1, dtype)))

    def step(carry: Any, k: Array) -> Any:
        y1, yh1, v1, a_y1, a_yh1, a_diff = carry
        t, _ = grid.times(k, dtype)
        dw = grid.increment(k, dtype)
        a_y0 = a_y1 + 2 * a_yh1 + read_saves(a_saved, grid.index, k, y1)
        a_v0 = _prod_t(grid, a_yh1 + 0.5 * a_y1, dw)
        yh0 = 2 * y1 - yh1 - _prod(grid, v1, dw)
        v0, vjp0 = vf_vjp(t, yh0)
        y0 = y1 - 0.5 * _prod(grid, jax.tree.map(jnp.add, v0, v1), dw)
        # The update of y_k (step k - 1) uses v_k too; there is none before the first step.
        first = k == 0
        dw_prev = grid.increment(jnp.maximum(k - 1, 0), dtype)
        a_prev = _prod_t(grid, jnp.where(first, 0.0, 0.5) * a_y0, dw_prev)
        d, a_yh_v = vjp0(jax.tree.map(jnp.add, a_v0, a_prev))
        a_diff = jax.tree.map(jnp.add, a_diff, d)
        return (y0, yh0, v0, a_y0, a_yh_v - a_yh1, a_diff), None

    init = (y_end, yh_end, v_end, a_y, a_yh, a_diff)
    (_, _, _, a_y, a_yh, a_diff), _ = _scan(step, init, grid.n, reverse=True)
    # y0 is both the first y and the first yhat.
    return a_diff, a_y + a_yh


def reversible_heun(
    vf: Callable[..., tuple[Any, ...]],
    noise: str | None,
    shape: tuple[int, ...],
    t0: float,
    dt: float,
    n: int,
    y0: Array,
    args: Any,
    index: Array | None,
    key: PRNGKeyArray | None,
    increments: Array | None,
) -> tuple[Array, PyTree[Array] | None]:
    """`(y_N, ys)` of the reversible Heun solve of `vf(t, y, args) = (f,)` (ODE, `noise=None`)
    or `(f, g)`, with increments from `key` or the given `increments` on the grid."""
    t = jnp.asarray(t0, y0.dtype)
    converted = eqx.filter_closure_convert(vf, t, y0, args)
    diff, static = eqx.partition((converted, args), eqx.is_inexact_array)
    grid = _Grid(t0, dt, n, noise, shape, index, key, increments)
    buffer = None if index is None else jnp.zeros((index.shape[0], *y0.shape), y0.dtype)
    return _solve((diff, y0), grid, static, buffer)


__all__ = ["reversible_heun"]
