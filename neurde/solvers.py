"""Solvers neurde adds to Diffrax's, and what a step of any solver costs.

Diffrax ships adaptive pairs (Tsit5, Dopri5, ...) and low-order fixed-step methods. The classic
fourth-order Runge–Kutta method, the fixed-step workhorse of the neural ODE literature, is added
here as a Butcher tableau so it runs through `diffrax.diffeqsolve` like any other solver.
Two explicit symplectic methods for Hamiltonian systems, Störmer–Verlet (`Leapfrog`) and
semi-implicit Euler (`SymplecticEuler`), act on a state $y = [q; p]$ with one `ODETerm`.
"""

from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from diffrax import ButcherTableau
from jaxtyping import Array

_rk4_tableau = ButcherTableau(
    c=np.array([0.5, 0.5, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    # RK4 has no embedded method; a zero error estimate makes it usable with
    # `ConstantStepSize` only, which is checked by `NeuralODE`.
    b_error=np.zeros(4),
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
)


class RK4(diffrax.AbstractSolver):
    r"""The classic fourth-order Runge–Kutta method.

    $k_1 = f(t, y)$, $k_2 = f(t + h/2, y + h k_1/2)$, $k_3 = f(t + h/2, y + h k_2/2)$,
    $k_4 = f(t + h, y + h k_3)$, $y_{n+1} = y_n + h(k_1 + 2k_2 + 2k_3 + k_4)/6$.

    Four stages, fourth order, no error estimate: it runs with `diffrax.ConstantStepSize`.
    The stages are written out rather than run through Diffrax's generic Runge–Kutta
    machinery, whose checkpointed loop over stages about doubles the cost of a training step
    on CPU (measured in benchmarks/ode_step.py; numbers in benchmarks/README.md).

    References: Kutta, "Beitrag zur näherungsweisen Integration totaler
    Differentialgleichungen", Z. Math. Phys. 46 (1901).
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., diffrax.ThirdOrderHermitePolynomialInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k
    )
    # The tableau is descriptive only (stage count, no error estimate) for NFE accounting.
    tableau: ClassVar[ButcherTableau] = _rk4_tableau

    def order(self, terms: Any) -> int:
        del terms
        return 4

    def init(self, terms: Any, t0: Any, t1: Any, y0: Any, args: Any) -> None:
        return None

    def step(
        self, terms: Any, t0: Any, t1: Any, y0: Any, args: Any, solver_state: Any, made_jump: Any
    ) -> tuple[Any, None, dict[str, Any], None, diffrax.RESULTS]:
        del solver_state, made_jump
        control = terms.contr(t0, t1)
        half = t0 + 0.5 * (t1 - t0)

        def shifted(y: Any, k: Any, a: float) -> Any:
            return jax.tree.map(lambda u, v: u + a * v, y, k)

        k1 = terms.vf_prod(t0, y0, args, control)
        k2 = terms.vf_prod(half, shifted(y0, k1, 0.5), args, control)
        k3 = terms.vf_prod(half, shifted(y0, k2, 0.5), args, control)
        k4 = terms.vf_prod(t1, shifted(y0, k3, 1.0), args, control)
        y1 = jax.tree.map(lambda y, a, b, c, d: y + (a + 2 * b + 2 * c + d) / 6, y0, k1, k2, k3, k4)
        k = jax.tree.map(lambda *ks: jnp.stack(ks), k1, k2, k3, k4)
        return y1, None, {"y0": y0, "y1": y1, "k": k}, None, diffrax.RESULTS.successful

    def func(self, terms: Any, t0: Any, y0: Any, args: Any) -> Any:
        return terms.vf(t0, y0, args)


def _halves(owner: str, y: Any) -> int:
    """The size `n` of `q` and `p` in a state `[q; p]`; a `ValueError` for any other state."""
    if not isinstance(y, jax.Array) or y.ndim != 1 or y.shape[0] % 2 != 0:
        shape = jax.tree.map(jnp.shape, y)
        raise ValueError(
            f"{owner}: the state must be one vector [q; p] of even length 2n, got {shape}. "
            "Flatten positions and momenta into one vector; a state with extra outputs "
            "(e.g. `neurde.noise.rnode`) or the backward state of `diffrax.BacksolveAdjoint` "
            "does not have this layout, so use `neurde.RK4()` or an adaptive solver there."
        )
    return y.shape[0] // 2


def _kick(y: Array, dy: Array, n: int) -> Array:
    """`y` with its momentum `p` moved by the momentum part of `dy`."""
    return y.at[n:].add(dy[n:])


def _drift(y: Array, dy: Array, n: int) -> Array:
    """`y` with its position `q` moved by the position part of `dy`."""
    return y.at[:n].add(dy[:n])


class _AbstractSymplectic(diffrax.AbstractSolver):
    """An explicit splitting method for $\\dot q = a(p)$, $\\dot p = b(q)$ on $y = [q; p]$.

    Symplectic for separable Hamiltonians $H = T(p) + V(q)$ ($a = \\nabla T$,
    $b = -\\nabla V$); on other fields it is a consistent, non-symplectic explicit method.
    Constant steps only (no error estimate).
    """

    term_structure: ClassVar = diffrax.ODETerm
    interpolation_cls: ClassVar[Callable[..., diffrax.LocalLinearInterpolation]] = (
        diffrax.LocalLinearInterpolation
    )

    def func(self, terms: Any, t0: Any, y0: Any, args: Any) -> Any:
        return terms.vf(t0, y0, args)


class SymplecticEuler(_AbstractSymplectic):
    r"""Semi-implicit (symplectic) Euler: a kick, then a drift at the new momentum.

    On a state $y = [q; p]$ with field $f = (\dot q, \dot p)$ and step $h$:
    $p_{n+1} = p_n + h\,\dot p(q_n, p_n)$, $q_{n+1} = q_n + h\,\dot q(q_n, p_{n+1})$.
    For a separable Hamiltonian ($\dot q$ depends on $p$ only, $\dot p$ on $q$ only) this is
    the explicit symplectic Euler method: first order, and its energy error stays bounded
    over exponentially long times instead of growing. Two field evaluations per step (the
    field returns both halves, and each half is needed at a different state). Constant step
    size only: pass `dt0` (the default controller is `diffrax.ConstantStepSize()`).

    References: Hairer, Lubich, Wanner, "Geometric Numerical Integration", 2nd ed.,
    Springer 2006, Section VI.3.
    """

    def order(self, terms: Any) -> int:
        del terms
        return 1

    def init(self, terms: Any, t0: Any, t1: Any, y0: Any, args: Any) -> None:
        return None

    def step(
        self, terms: Any, t0: Any, t1: Any, y0: Any, args: Any, solver_state: Any, made_jump: Any
    ) -> tuple[Any, None, dict[str, Any], None, diffrax.RESULTS]:
        del solver_state, made_jump
        n = _halves("SymplecticEuler", y0)
        control = terms.contr(t0, t1)
        kicked = _kick(y0, terms.vf_prod(t0, y0, args, control), n)
        y1 = _drift(kicked, terms.vf_prod(t0, kicked, args, control), n)
        return y1, None, {"y0": y0, "y1": y1}, None, diffrax.RESULTS.successful


class Leapfrog(_AbstractSymplectic):
    r"""Störmer–Verlet (leapfrog) in kick-drift-kick form: second order and symplectic.

    On a state $y = [q; p]$ with field $f = (\dot q, \dot p)$ and step $h$:

    $$p_{n+1/2} = p_n + \tfrac{h}{2}\dot p(q_n),\quad
    q_{n+1} = q_n + h\,\dot q(p_{n+1/2}),\quad
    p_{n+1} = p_{n+1/2} + \tfrac{h}{2}\dot p(q_{n+1}).$$

    For a separable Hamiltonian $H = T(p) + V(q)$ this is the explicit Störmer–Verlet
    method: second order, symmetric, symplectic, so the energy error stays bounded (no
    drift) over long rollouts. The final kick's field value, taken at $(q_{n+1},
    p_{n+1/2})$, is reused as the first kick of the next step (exact when $\dot p$ depends
    on $q$ only), so a step costs two field evaluations, plus one before the first step.
    On a non-separable field the method is explicit and consistent but neither symplectic
    nor second order; use an adaptive solver there. Constant step size only: pass `dt0`.

    References: Verlet, "Computer 'experiments' on classical fluids", Phys. Rev. 159
    (1967); Hairer, Lubich, Wanner, "Geometric numerical integration illustrated by the
    Störmer–Verlet method", Acta Numerica 12 (2003).
    """

    def order(self, terms: Any) -> int:
        del terms
        return 2

    def init(self, terms: Any, t0: Any, t1: Any, y0: Any, args: Any) -> Any:
        _halves("Leapfrog", y0)
        return terms.vf(t0, y0, args)

    def step(
        self, terms: Any, t0: Any, t1: Any, y0: Any, args: Any, solver_state: Any, made_jump: Any
    ) -> tuple[Any, Any, dict[str, Any], Any, diffrax.RESULTS]:
        n = _halves("Leapfrog", y0)
        # After a jump of the state the stored field value is stale: evaluate it again.
        f0 = jax.lax.cond(jnp.any(made_jump), lambda: terms.vf(t0, y0, args), lambda: solver_state)
        h = terms.contr(t0, t1)
        half = t0 + 0.5 * (t1 - t0)
        kicked = _kick(y0, terms.prod(f0, 0.5 * h), n)
        drifted = _drift(kicked, terms.vf_prod(half, kicked, args, h), n)
        f1 = terms.vf(t1, drifted, args)
        y1 = _kick(drifted, terms.prod(f1, 0.5 * h), n)
        return y1, None, {"y0": y0, "y1": y1}, f1, diffrax.RESULTS.successful


def evaluations_per_step(solver: diffrax.AbstractSolver) -> int | None:
    r"""Vector-field evaluations one step of `solver` costs, or `None` if unknown.

    Explicit Runge–Kutta methods cost one evaluation per stage, one fewer when the last stage
    of a step is reused as the first of the next (FSAL). Euler-type SDE solvers cost one
    evaluation of each term per step and count as one here. The symplectic methods
    (`SymplecticEuler`, `Leapfrog`) cost two: the field returns both halves of $[\dot q;
    \dot p]$, and each half is needed at a different state.

    **Arguments:**

    - `solver`: any Diffrax solver.

    **Returns:**

    The number of evaluations per step (accepted or rejected), or `None` for implicit and
    other solvers whose cost depends on an inner iteration.
    """
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(
            "evaluations_per_step: `solver` must be a Diffrax solver (e.g. `diffrax.Tsit5()`), "
            f"got {type(solver).__name__}."
        )
    tableau = getattr(solver, "tableau", None)
    if isinstance(tableau, ButcherTableau):
        if tableau.implicit:
            return None
        return tableau.num_stages - (1 if tableau.fsal else 0)
    simple = (
        diffrax.Euler,
        diffrax.ItoMilstein,
        diffrax.StratonovichMilstein,
        diffrax.ReversibleHeun,
    )
    if isinstance(solver, simple):
        return 1
    if isinstance(solver, diffrax.EulerHeun | SymplecticEuler | Leapfrog):
        return 2
    return None


def evaluations_at_start(solver: diffrax.AbstractSolver) -> int:
    """Evaluations spent before the first step: the first stage of an FSAL method (and the
    first kick of `Leapfrog`, whose last evaluation of each step is reused by the next).

    Diffrax's initial step-size selection (when `dt0=None`) is not counted: with Diffrax 0.7
    a counting callback observes no evaluations from it (tests/test_ode.py).
    """
    tableau = getattr(solver, "tableau", None)
    fsal = isinstance(tableau, ButcherTableau) and tableau.fsal
    reuses_last = isinstance(solver, diffrax.ReversibleHeun | Leapfrog)
    return int(fsal) + int(reuses_last)


__all__ = [
    "RK4",
    "Leapfrog",
    "SymplecticEuler",
    "evaluations_at_start",
    "evaluations_per_step",
]
