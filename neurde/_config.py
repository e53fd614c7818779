"""Solver configuration of the continuous models: resolved and checked where it is used.

Every function here runs twice for a model: in its constructor, so a bad setting fails where
it is written, and again each time a solve is traced (`problem(...)`), so a model edited with
`eqx.tree_at` (which runs no constructor) gets the same message instead of Diffrax's.
Tracing happens once per compilation, so the checks cost nothing at run time.
"""

from typing import Any, Literal, TypeAlias

import diffrax
import numpy as np

from ._reversible import Reversible, check_reversible
from ._validation import check_interval, check_positive
from .tolerances import Tolerances

NoiseType: TypeAlias = Literal["diagonal", "scalar", "general"]
BrownianKind: TypeAlias = Literal["tree", "grid"]

_ADJOINTS = {
    "backprop": "diffrax.RecursiveCheckpointAdjoint() (backprop through the solver)",
    "direct": "diffrax.DirectAdjoint() (forward- and reverse-mode through the solver)",
    "adjoint": "diffrax.BacksolveAdjoint() (continuous adjoint, O(1) memory)",
    "reversible": "neurde.Reversible() (exact gradients in O(1) memory, constant or PID steps)",
}
_MILSTEIN = (diffrax.ItoMilstein, diffrax.StratonovichMilstein)


def has_error_estimate(solver: diffrax.AbstractSolver) -> bool:
    """Whether `solver` estimates its local error, as adaptive step sizing needs."""
    tableau = getattr(solver, "tableau", None)
    if isinstance(tableau, diffrax.ButcherTableau):
        # neurde.RK4 carries a tableau with a zero error row: a fixed-step method.
        return bool(np.any(np.asarray(tableau.b_error) != 0))
    return isinstance(solver, diffrax.AbstractAdaptiveSolver)


def resolve_adjoint(owner: str, adjoint: Any) -> diffrax.AbstractAdjoint:
    """Map `"backprop" | "direct" | "adjoint" | "reversible"` (or a Diffrax adjoint) to an
    adjoint."""
    if isinstance(adjoint, diffrax.AbstractAdjoint):
        return adjoint
    if adjoint == "backprop":
        return diffrax.RecursiveCheckpointAdjoint()
    if adjoint == "direct":
        return diffrax.DirectAdjoint()
    if adjoint == "adjoint":
        return diffrax.BacksolveAdjoint()
    if adjoint == "reversible":
        return Reversible()
    choices = "\n".join(f"  {k!r}: {v}" for k, v in _ADJOINTS.items())
    raise ValueError(
        f"{owner}: unknown `adjoint={adjoint!r}`. Choose one of\n{choices}\n"
        "or pass any `diffrax.AbstractAdjoint` instance."
    )


def check_solver(owner: str, solver: Any) -> diffrax.AbstractSolver:
    """Raise `TypeError` unless `solver` is a Diffrax solver."""
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(
            f"{owner}: `solver` must be a Diffrax solver (e.g. `diffrax.Tsit5()`, "
            f"`neurde.RK4()`), got {type(solver).__name__}."
        )
    return solver


def check_max_steps(owner: str, max_steps: Any) -> int:
    """Raise `ValueError` unless `max_steps` is an integer >= 1."""
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"{owner}: `max_steps` must be an integer >= 1, got {max_steps!r}.")
    return max_steps


def check_tolerances_and_controller(owner: str, controller: Any, rtol: Any, atol: Any) -> None:
    """A controller carries its own tolerances: refuse `rtol`/`atol` given beside one."""
    if controller is not None and (rtol is not None or atol is not None):
        raise ValueError(
            f"{owner}: got both `stepsize_controller` and `rtol`/`atol`; the tolerances "
            "would be ignored. Put them in the controller "
            "(`diffrax.PIDController(rtol=..., atol=...)`), or drop the controller to use "
            "neurde's default PID controller with these tolerances."
        )


def resolve_controller(
    owner: str,
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController | None,
    dt0: float | None,
    tolerances: Tolerances | None,
) -> diffrax.AbstractStepSizeController:
    """The controller a solve uses, after checking the solver/controller/dt0 combination.

    `controller=None` means the default: a `diffrax.PIDController` with `tolerances` for
    solvers with an error estimate, `diffrax.ConstantStepSize()` for the others.
    """
    check_positive(owner, "dt0", dt0, "Use a positive initial or constant step size.")
    adaptive_solver = has_error_estimate(solver)
    if controller is None:
        if not adaptive_solver:
            controller = diffrax.ConstantStepSize()
        elif tolerances is None:
            raise ValueError(
                f"{owner}: no step-size controller and no tolerances. Set `stepsize_controller` "
                "or the tolerances (`rtol`, `atol`)."
            )
        else:
            controller = tolerances.controller()
    elif not isinstance(controller, diffrax.AbstractStepSizeController):
        raise TypeError(
            f"{owner}: `stepsize_controller` must be a Diffrax step-size controller "
            f"(e.g. `diffrax.PIDController(...)`), got {type(controller).__name__}."
        )
    if isinstance(controller, diffrax.ConstantStepSize) and dt0 is None:
        raise ValueError(
            f"{owner}: {type(solver).__name__} runs with a constant step size, so `dt0` is "
            "needed (e.g. `dt0=0.05`); or pick an adaptive solver such as `diffrax.Tsit5()`."
        )
    adaptive_controller = isinstance(controller, diffrax.AbstractAdaptiveStepSizeController)
    if adaptive_controller and not adaptive_solver:
        raise ValueError(
            f"{owner}: {type(solver).__name__} has no error estimate, so it cannot be used "
            "with an adaptive step-size controller. Pass "
            "`stepsize_controller=diffrax.ConstantStepSize()` and `dt0`, or use an adaptive "
            "solver such as `diffrax.Tsit5()`."
        )
    return controller


def check_noise(owner: str, noise: Any, noise_size: Any) -> None:
    """The noise structure of an SDE and the Brownian dimension it needs."""
    if noise not in ("diagonal", "scalar", "general"):
        raise ValueError(
            f"{owner}: unknown `noise={noise!r}`; choose 'diagonal', 'scalar' or 'general'."
        )
    if noise == "general" and (
        isinstance(noise_size, bool) or not isinstance(noise_size, int) or noise_size < 1
    ):
        raise ValueError(
            f"{owner}: general noise needs `noise_size` (the Brownian dimension m >= 1), "
            f"got {noise_size!r}. The diffusion must then return shape (d, m)."
        )
    if noise != "general" and noise_size is not None:
        raise ValueError(
            f"{owner}: `noise_size` only applies to noise='general', got "
            f"noise={noise!r}, noise_size={noise_size!r}. Drop `noise_size`."
        )


def check_sde_solver(
    owner: str,
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController,
    noise: NoiseType,
    brownian: Any,
    brownian_tol: Any,
) -> None:
    """The combinations of SDE solver, noise and Brownian motion that cannot work."""
    if brownian not in (None, "tree", "grid"):
        raise ValueError(
            f"{owner}: `brownian` must be 'tree' or 'grid' (or None to choose), got {brownian!r}."
        )
    if brownian_tol is not None and not brownian_tol > 0:
        raise ValueError(f"{owner}: `brownian_tol` must be > 0, got {brownian_tol!r}.")
    if noise == "general" and isinstance(solver, _MILSTEIN):
        raise ValueError(
            f"{owner}: {type(solver).__name__} needs diagonal or scalar noise, got "
            "noise='general'. Use `diffrax.Euler()` (Itô) or `diffrax.Heun()` "
            "(Stratonovich) for general noise."
        )
    if brownian == "grid" and not isinstance(controller, diffrax.ConstantStepSize):
        raise ValueError(
            f"{owner}: brownian='grid' samples the Brownian motion on the grid of a "
            "constant step size; got an adaptive controller. Use brownian='tree' with "
            "adaptive steps."
        )
    if brownian == "grid" and levy_area(solver) is not diffrax.BrownianIncrement:
        raise ValueError(
            f"{owner}: {type(solver).__name__} needs Lévy areas, which brownian='grid' does "
            "not sample. Use brownian='tree'."
        )


def levy_area(solver: diffrax.AbstractSolver) -> type:
    """The Lévy area an SDE solver needs from the Brownian motion: the cheapest concrete
    class of the (possibly abstract) `minimal_levy_area` it declares, since a
    `diffrax.VirtualBrownianTree` needs a concrete one (e.g. `SpaceTimeLevyArea` for
    `diffrax.SRA1`, which declares `AbstractSpaceTimeLevyArea`)."""
    area = getattr(solver, "minimal_levy_area", diffrax.BrownianIncrement)
    for concrete in (
        diffrax.BrownianIncrement,
        diffrax.SpaceTimeLevyArea,
        diffrax.SpaceTimeTimeLevyArea,
    ):
        if issubclass(concrete, area):
            return concrete
    return area


def ode_capable(solver: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    """`solver` for the drift alone once the noise is off: SDE-only solvers become Euler."""
    if isinstance(solver, diffrax.AbstractRungeKutta | diffrax.Euler | diffrax.ReversibleHeun):
        return solver
    # Milstein with zero diffusion is Euler's method; Diffrax refuses SDE-only solvers on
    # ODEs.
    return diffrax.Euler()


def init_settings(
    model: Any,
    owner: str,
    solver: diffrax.AbstractSolver,
    stepsize_controller: Any,
    rtol: Any,
    atol: Any,
    adjoint: Any,
    t0: float,
    t1: float | None,
    dt0: float | None,
    max_steps: int,
    throw: bool,
) -> None:
    """Set, in a continuous model's `__init__`, the solver fields NeuralODE and NeuralSDE share.

    The tolerances are stored only without a controller: a controller carries its own, and
    tolerances beside it would be silently unused.
    """
    check_tolerances_and_controller(owner, stepsize_controller, rtol, atol)
    if not isinstance(throw, bool):
        raise TypeError(f"{owner}: `throw` must be True or False, got {throw!r}.")
    model.solver = solver
    model.stepsize_controller = stepsize_controller
    model.tolerances = None
    if stepsize_controller is None:
        model.tolerances = Tolerances(
            1e-3 if rtol is None else rtol, 1e-6 if atol is None else atol
        )
    model.adjoint = resolve_adjoint(owner, adjoint)
    model.t0 = float(t0)
    model.t1 = None if t1 is None else float(t1)
    model.dt0 = None if dt0 is None else float(dt0)
    model.max_steps = max_steps
    model.throw = throw


def configuration(
    owner: str, model: Any
) -> tuple[diffrax.AbstractSolver, diffrax.AbstractStepSizeController, diffrax.AbstractAdjoint]:
    """Check a continuous model's solver settings and resolve them: `(solver, controller,
    adjoint)`. Called by the constructor and again by `problem(...)` at every trace."""
    solver = check_solver(owner, model.solver)
    controller = resolve_controller(
        owner, solver, model.stepsize_controller, model.dt0, model.tolerances
    )
    check_max_steps(owner, model.max_steps)
    if model.t1 is not None:
        check_interval(owner, model.t0, model.t1)
    adjoint = resolve_adjoint(owner, model.adjoint)
    if isinstance(adjoint, Reversible):
        # The SDE-only requirements (reversible Heun, a grid path) are checked per solve.
        check_reversible(owner, solver, controller, sde=False)
    return solver, controller, adjoint
