r"""`Reversible`: exact gradients in constant memory from algebraically reversible solvers.

Passed as `adjoint=` (or `adjoint="reversible"`) to a `neurde.NeuralODE` or
`neurde.NeuralSDE`, it replaces backprop through the stored solve by a backward pass that
*reconstructs* each state from the next one with the solver's exact algebraic inverse and
takes the vector-Jacobian product of that one step there. Memory is that of one step,
whatever the number of steps, and the gradient is the exact gradient of the discrete forward
map up to floating-point rounding (unlike the continuous adjoint, whose gradient carries the
error of a second, backward solve).

- ODEs: any explicit Runge–Kutta solver (`diffrax.Euler`, `Heun`, `Midpoint`, `Ralston`,
  `Bosh3`, `Tsit5`, `Dopri5`, `Dopri8`, `neurde.RK4`) is made reversible by McCallum and
  Foster's coupling (`neurde/_reversible_rk.py`).
- SDEs: `diffrax.ReversibleHeun` (Kidger et al.), on the grid Brownian path
  (`neurde/_reversible_heun.py`).

Adaptive steps (ODEs, `diffrax.PIDController`): `neurde/_reversible_adaptive.py`. This module
holds the public object, the checks, and the save-time bookkeeping they share.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ._validation import is_concrete
from .solvers import RK4


class Reversible(diffrax.AbstractAdjoint):
    r"""Exact gradients in constant memory by reversing the solve algebraically.

    For an ODE the base explicit Runge–Kutta step $y \mapsto y + \Psi_h(t, y)$ is made
    reversible by McCallum and Foster's coupling of two states $(y_n, z_n)$, $z_0 = y_0$:

    $$y_{n+1} = \lambda y_n + (1 - \lambda) z_n + \Psi_h(t_n, z_n), \qquad
    z_{n+1} = z_n - \Psi_{-h}(t_{n+1}, y_{n+1}),$$

    inverted exactly by $z_n = z_{n+1} + \Psi_{-h}(t_{n+1}, y_{n+1})$,
    $y_n = (y_{n+1} - (1-\lambda) z_n - \Psi_h(t_n, z_n)) / \lambda$. The model's output is
    $y$; the scheme has the base method's order, and costs two base steps per step forward
    and two (with their vector-Jacobian products) backward.

    **Stability.** On $\dot y = a y$ with $z = h a$ and base stability function $R$, one
    step is a $2 \times 2$ matrix of determinant $\lambda$, whose eigenvalues are close to
    $R(z)$ (the solution) and $\lambda / R(z)$ (a parasitic mode; exactly so for the exact
    flow). The forward solve is therefore stable where $|R(z)| \le 1$ and
    $|R(z)| \gtrsim \lambda$: around the imaginary axis (oscillations, mild dynamics), but a
    strongly decaying mode with $h\,|\mathrm{Re}\,a| > \log(1/\lambda)$ makes the parasitic
    mode grow. With the default $\lambda = 0.999$ that bound is $h|\mathrm{Re}\,a| < 10^{-3}$
    (e.g. $\dot y = -y$ with $h = 0.1$ diverges over a few hundred steps, while
    $\lambda = 0.9$ is stable there). The backward reconstruction amplifies rounding by up to
    $1/\lambda$ per step, so a smaller $\lambda$ trades forward stability for backward
    accuracy: $\lambda^{-n}$ must stay moderate ($0.999^{-1000} \approx 2.7$,
    $0.9^{-100} \approx 4 \cdot 10^4$). `tests/test_reversible_solve.py` checks both cases.

    For an SDE solved with `diffrax.ReversibleHeun` the solver itself is reversible and
    `coupling` is unused.

    **Steps.** With `stepsize_controller=diffrax.ConstantStepSize()` the `dt0` must divide
    the interval and save times `ts` lie on the step grid. With a `diffrax.PIDController`
    (ODEs, a base solver with an embedded error estimate: `Heun`, `Bosh3`, `Tsit5`,
    `Dopri5`, ...) the steps adapt, as the paper allows: the controller sees the sum of the
    embedded error estimates of the step's two base steps, the accepted times are recorded
    in a buffer of `max_steps + 1` scalars and replayed backwards, and steps are clipped to
    land on every save time. The accepted steps are constants for the gradient, as in
    Diffrax (its controller stops gradients through the step size); memory is then
    $O(1)$ states plus the `max_steps + 1` recorded times of each trajectory (under `vmap`,
    one buffer per example: 64 examples at `max_steps=4096` in float32 is 1 MiB). Gradients
    flow to the initial state, the field's parameters and `args`, not to `t0`, `t1`, `ts`
    or the tolerances. Save times off the constant-step grid (dense output) are not
    supported: with constant steps they raise an error; use adaptive steps, which land on
    them.

    **Arguments:**

    - `coupling`: $\lambda \in (0, 1]$ (default 0.999, the paper's recommendation).

    References: McCallum, Foster, "Efficient, Accurate and Stable Gradients for Neural ODEs",
    arXiv:2410.11648, 2024; Kidger, Foster, Li, Lyons, "Efficient and Accurate Gradients for
    Neural SDEs", NeurIPS 2021.
    """

    coupling: float = eqx.field(static=True, default=0.999)

    def __check_init__(self) -> None:
        if not (isinstance(self.coupling, int | float) and 0 < self.coupling <= 1):
            raise ValueError(
                f"Reversible: `coupling` must be a number in (0, 1], got {self.coupling!r}. "
                "The paper recommends 0.999; lower it for strongly decaying dynamics."
            )

    def loop(self, **kwargs: Any) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        del kwargs
        raise TypeError(
            "neurde.Reversible is an adjoint for neurde models (`NeuralODE(..., "
            "adjoint=neurde.Reversible())`), not for `diffrax.diffeqsolve`."
        )


def _ode_solver_ok(solver: diffrax.AbstractSolver) -> bool:
    return isinstance(solver, diffrax.AbstractERK | diffrax.Euler | RK4)


def check_reversible(
    owner: str,
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController,
    sde: bool,
) -> None:
    """The solver and controller combinations the reversible adjoint supports."""
    if sde and not isinstance(solver, diffrax.ReversibleHeun):
        raise ValueError(
            f"{owner}: adjoint='reversible' for an SDE needs `solver=diffrax.ReversibleHeun()`"
            f" (the algebraically reversible SDE solver), got {type(solver).__name__}."
        )
    if not sde and not (_ode_solver_ok(solver) or isinstance(solver, diffrax.ReversibleHeun)):
        raise ValueError(
            f"{owner}: adjoint='reversible' wraps an explicit Runge–Kutta solver "
            "(`diffrax.Euler`, `Heun`, `Midpoint`, `Ralston`, `Bosh3`, `Tsit5`, `Dopri5`, "
            f"`neurde.RK4`), got {type(solver).__name__}. Implicit and other solvers have "
            "no cheap exact inverse: use adjoint='backprop' with them."
        )
    if isinstance(controller, diffrax.ConstantStepSize):
        return
    if sde or isinstance(solver, diffrax.ReversibleHeun):
        raise ValueError(
            f"{owner}: adjoint='reversible' with `diffrax.ReversibleHeun` runs with constant "
            f"steps; got {type(controller).__name__}. Pass `stepsize_controller="
            "diffrax.ConstantStepSize()` and `dt0`."
        )
    if not isinstance(controller, diffrax.PIDController):
        raise ValueError(
            f"{owner}: adjoint='reversible' takes constant steps or adaptive steps from a "
            f"`diffrax.PIDController`; got {type(controller).__name__}. Pass "
            "`stepsize_controller=diffrax.PIDController(rtol=..., atol=...)` or "
            "`diffrax.ConstantStepSize()` with `dt0`."
        )
    # A solver without an error estimate is refused with an adaptive controller before this.


def grid_size(owner: str, t0: Any, t1: Any, dt0: float | None, max_steps: int) -> int:
    """The number of constant steps of `dt0` from `t0` to `t1`, which must divide."""
    if dt0 is None or not (is_concrete(t0) and is_concrete(t1)):
        raise ValueError(
            f"{owner}: adjoint='reversible' needs the step `dt0` and an end time known when "
            "tracing (not one read from traced save times `ts`). Build the model with "
            "`t1=...` and `dt0=...`."
        )
    steps = (float(t1) - float(t0)) / dt0
    n = round(steps)
    if n < 1 or abs(steps - n) > 1e-6 * max(1.0, steps):
        raise ValueError(
            f"{owner}: adjoint='reversible' takes constant steps on a grid, but dt0 = {dt0} "
            f"does not divide t1 - t0 = {float(t1) - float(t0)}. Choose a dt0 dividing it."
        )
    if n > max_steps:
        raise ValueError(
            f"{owner}: the solve takes {n} steps of dt0 = {dt0}, more than "
            f"`max_steps={max_steps}`. Raise `max_steps` or take a larger `dt0`."
        )
    return n


def save_indices(owner: str, ts: Array | None, t0: float, dt: float) -> Array | None:
    """The grid index of each save time (`ts` must lie on the grid `t0 + k dt`)."""
    if ts is None:
        return None
    message = (
        f"{owner}: adjoint='reversible' saves on the step grid t0 + k dt0 (dt0 = {dt}); "
        "some save times `ts` fall between grid points. Choose `ts` on the grid or a "
        "`dt0` that divides their spacing."
    )
    if is_concrete(ts):
        times = np.asarray(ts, np.float64)
        steps = np.round((times - t0) / dt)
        if np.any(np.abs(times - (t0 + steps * dt)) > 1e-6 * dt):
            raise ValueError(f"{message} Got ts = {times!r}.")
        return jnp.asarray(steps, jnp.int32)
    k = jnp.round((ts - t0) / dt)
    k = eqx.error_if(k, jnp.abs(ts - (t0 + k * dt)) > 1e-6 * dt, message)
    return k.astype(jnp.int32)


def write_saves(buffer: PyTree[Array], index: Array | None, k: Any, y: PyTree[Array]) -> Any:
    """`buffer` (one row per save time) with `y` written in the rows saved at step `k`."""
    if index is None:
        return buffer

    def write(b: Array, v: Array) -> Array:
        mask = (index == k).reshape(-1, *([1] * v.ndim))
        return jnp.where(mask, v[None], b)

    return jax.tree.map(write, buffer, y)


def read_saves(cotangent: PyTree[Array], index: Array | None, k: Any, like: Any) -> Any:
    """The sum of the save-time cotangent rows saved at step `k` (zeros if none)."""
    if index is None or cotangent is None:
        return jax.tree.map(jnp.zeros_like, like)

    def read(c: Array) -> Array:
        mask = (index == k).reshape(-1, *([1] * (c.ndim - 1)))
        return jnp.sum(jnp.where(mask, c, 0), axis=0)

    return jax.tree.map(read, cotangent)


def index_scan(step: Callable[[Any, Array], Any], init: Any, n: int, reverse: bool = False):
    """`lax.scan` of `step(carry, k)` over k = 0..n-1 (or back), with the step number in the
    carry: an `arange(n)` of inputs would be a buffer growing with the number of steps."""

    def body(carry: Any, _: None) -> Any:
        inner, k = carry
        inner, out = step(inner, k)
        return (inner, k - 1 if reverse else k + 1), out

    start = jnp.asarray(n - 1 if reverse else 0, jnp.int32)
    (carry, _), out = jax.lax.scan(body, (init, start), None, length=n)
    return carry, out


def zeros_for_none(cotangent: Any, like: Any) -> Any:
    """Symbolic-zero (`None`) cotangent leaves made into arrays shaped like `like`."""
    return jax.tree.map(
        lambda c, x: jnp.zeros_like(x) if c is None else c,
        cotangent,
        like,
        is_leaf=lambda c: c is None,
    )


__all__ = [
    "Reversible",
    "check_reversible",
    "grid_size",
    "index_scan",
    "read_saves",
    "save_indices",
    "write_saves",
    "zeros_for_none",
]
