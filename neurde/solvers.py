"""Solvers neurde adds to Diffrax's, and what a step of any solver costs.

Diffrax ships adaptive pairs (Tsit5, Dopri5, ...) and low-order fixed-step methods. The classic
fourth-order Runge–Kutta method, the fixed-step workhorse of the neural ODE literature, is added
here as a Butcher tableau so it runs through `diffrax.diffeqsolve` like any other solver.
"""

from collections.abc import Callable
from typing import ClassVar

import diffrax
import numpy as np
from diffrax import AbstractERK, ButcherTableau

_rk4_tableau = ButcherTableau(
    c=np.array([0.5, 0.5, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    # RK4 has no embedded method; a zero error estimate makes it usable with
    # `ConstantStepSize` only, which is checked by `NeuralODE`.
    b_error=np.zeros(4),
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
)


class RK4(AbstractERK):
    r"""The classic fourth-order Runge–Kutta method.

    $k_1 = f(t, y)$, $k_2 = f(t + h/2, y + h k_1/2)$, $k_3 = f(t + h/2, y + h k_2/2)$,
    $k_4 = f(t + h, y + h k_3)$, $y_{n+1} = y_n + h(k_1 + 2k_2 + 2k_3 + k_4)/6$.

    Four stages, fourth order, no error estimate: use it with `diffrax.ConstantStepSize`.

    References: Kutta, "Beitrag zur näherungsweisen Integration totaler
    Differentialgleichungen", Z. Math. Phys. 46 (1901).
    """

    tableau: ClassVar[ButcherTableau] = _rk4_tableau  # pyright: ignore[reportIncompatibleVariableOverride]
    interpolation_cls: ClassVar[Callable[..., diffrax.ThirdOrderHermitePolynomialInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def order(self, terms):
        del terms
        return 4


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
