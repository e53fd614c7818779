"""Solvers neurde adds to Diffrax's, and what a step of any solver costs.

Diffrax ships adaptive pairs (Tsit5, Dopri5, ...) and low-order fixed-step methods. The classic
fourth-order Runge–Kutta method, the fixed-step workhorse of the neural ODE literature, is added
here as a Butcher tableau so it runs through `diffrax.diffeqsolve` like any other solver.
"""

from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from diffrax import ButcherTableau

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


def evaluations_per_step(solver: diffrax.AbstractSolver) -> int | None:
    """Vector-field evaluations one step of `solver` costs, or `None` if unknown.

    Explicit Runge–Kutta methods cost one evaluation per stage, one fewer when the last stage
    of a step is reused as the first of the next (FSAL). Euler-type SDE solvers cost one
    evaluation of each term per step and count as one here.

    **Arguments:**

    - `solver`: any Diffrax solver.

    **Returns:**

    The number of evaluations per step (accepted or rejected), or `None` for implicit and
    other solvers whose cost depends on an inner iteration.
    """
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
    if isinstance(solver, diffrax.EulerHeun):
        return 2
    return None


def evaluations_at_start(solver: diffrax.AbstractSolver) -> int:
    """Evaluations spent before the first step: the first stage of an FSAL method.

    Diffrax's initial step-size selection (when `dt0=None`) is not counted: with Diffrax 0.7
    a counting callback observes no evaluations from it (tests/test_ode.py).
    """
    tableau = getattr(solver, "tableau", None)
    fsal = isinstance(tableau, ButcherTableau) and tableau.fsal
    reversible = isinstance(solver, diffrax.ReversibleHeun)
    return int(fsal) + int(reversible)


__all__ = ["RK4", "evaluations_at_start", "evaluations_per_step"]
