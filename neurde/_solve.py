"""The one integration path of the continuous models: a `Problem` in, a `ModelSolution` out.

`integrate` checks the state and the fields against the problem (at trace time), builds the
Diffrax terms (the drift, or the drift augmented with the extra outputs; the diffusion
against a Brownian motion), calls `diffrax.diffeqsolve` and turns a failed solve into an
error that says what to try.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from ._config import configuration, levy_area
from ._reversible import Reversible, check_reversible, grid_size, save_indices
from ._reversible_adaptive import reversible_adaptive
from ._reversible_heun import reversible_heun
from ._reversible_rk import reversible_rk
from ._scan_solve import given_increments, noise_shape, scan_integrate, scannable
from ._validation import (
    check_field_output,
    check_interval,
    check_state,
    check_times,
    guard_interval,
    guard_tolerances,
    is_concrete,
    promote_state,
)
from .brownian import GridBrownianPath
from .evaluations import counted
from .problem import Problem
from .solution import ModelSolution
from .solvers import evaluations_at_start, evaluations_per_step
from .stats import counting, solver_stats


def model_problem(owner: str, model: Any, drift: Any, ts: Any) -> Problem:
    """The ODE problem of a model's drift with its (checked) solver settings and interval."""
    solver, controller, adjoint = configuration(owner, model)
    t0, t1 = resolve_interval(owner, model.t0, model.t1, ts)
    settings = (solver, controller, adjoint, model.dt0, model.max_steps, model.throw)
    return Problem(drift, t0, t1, *settings, owner)


def resolve_interval(owner: str, t0: float, t1: Any, ts: Any) -> tuple[Any, Any]:
    """The solve's `(t0, t1)`: the model's interval, or up to the last save time."""
    if t1 is None:
        if ts is None:
            raise ValueError(
                f"{owner}: no end time. Pass save times `ts=...`, or build the model with "
                f"`t1=...` (e.g. `{owner}(..., t1=1.0)`)."
            )
        t1 = jnp.asarray(ts)[-1]
    check_interval(owner, t0, t1)
    return t0, t1


class _AugState(eqx.Module):
    """The Diffrax state of a solve with extra outputs: the model's state and the extras."""

    y: PyTree[Array]
    extras: dict[str, Array]


class _WithExtras(eqx.Module):
    """The drift of an augmented solve: `augmented(t, y, args)` on the state `(y, extras)`.

    A module, so the parameters inside stay visible to `diffrax.BacksolveAdjoint`.
    """

    augmented: Callable[..., Any]

    def __call__(self, t: Any, state: _AugState, args: Any) -> _AugState:
        dy, dextras = self.augmented(t, state.y, args)
        # An extra without an integrand (e.g. a penalty in inference mode) stays constant.
        zero = {k: jnp.zeros_like(v) for k, v in state.extras.items()}
        return _AugState(dy, {**zero, **dextras})


class _Diffusion(diffrax.AbstractTerm):
    """$g(t, y)\\,dW$ for diagonal, scalar or general noise, acting on `y` only.

    With extra outputs the Diffrax state is `(y, extras)`: the extras are integrals of the
    drift alone, so their part of the product is zero.
    """

    diffusion: Callable[..., Any]
    path: diffrax.AbstractPath
    extras: dict[str, Array] | None
    noise: str = eqx.field(static=True)

    def vf(self, t: Any, y: Any, args: Any) -> Any:
        return self.diffusion(t, y if self.extras is None else y.y, args)

    def contr(self, t0: Any, t1: Any, **kwargs: Any) -> Any:
        return self.path.evaluate(t0, t1, **kwargs)

    def prod(self, vf: Any, control: Any) -> Any:
        dy = vf @ control if self.noise == "general" else vf * control
        if self.extras is None:
            return dy
        return _AugState(dy, jax.tree.map(jnp.zeros_like, self.extras))


def _brownian(problem: Problem, y: Array) -> diffrax.AbstractPath:
    if problem.path is not None:
        return problem.path
    key = problem.key
    assert key is not None  # checked by `_terms`
    t0 = problem.t0
    t1 = problem.t1 if problem.brownian_t1 is None else problem.brownian_t1
    shape = noise_shape(problem, y)
    if problem.brownian == "grid":
        assert problem.dt0 is not None  # checked with the configuration
        if not (is_concrete(t0) and is_concrete(t1)):
            raise ValueError(
                f"{problem.owner}: brownian='grid' samples the Brownian motion on the step "
                "grid up to the end time, which must then be known when tracing; here it is "
                "traced (e.g. the last of save times `ts` passed under `jax.vmap`/`jit`). "
                "Give the model its end time (`t1=...`), or use brownian='tree'."
            )
        return GridBrownianPath(t0, t1, problem.dt0, shape, dtype=y.dtype, key=key)
    tol = problem.brownian_tol
    if tol is None:
        tol = problem.dt0 / 2 if problem.dt0 is not None else (t1 - t0) / 2**12
    return diffrax.VirtualBrownianTree(
        t0, t1, tol=tol, shape=shape, key=key, levy_area=levy_area(problem.solver)
    )


def divides(t0: Any, t1: Any, dt0: float) -> bool:
    """Whether constant steps of `dt0` from concrete `t0` land on `t1` (Diffrax then steps on
    the grid t0 + k dt0; otherwise it splits the interval evenly after a first step of
    `dt0`). False for traced times."""
    if not (is_concrete(t0) and is_concrete(t1)):
        return False
    steps = (float(t1) - float(t0)) / dt0
    return abs(steps - round(steps)) <= 1e-6 * max(1.0, steps)


def on_grid(problem: Problem, controller: Any, dt0: float | None) -> bool:
    """Whether constant steps of `dt0` land on a grid from t0 (then a grid Brownian path is
    exact at every step, and several times cheaper than a virtual tree)."""
    if not isinstance(controller, diffrax.ConstantStepSize) or dt0 is None:
        return False
    # A random or traced end time (STEER) is not on the grid.
    return problem.brownian_t1 is None and divides(problem.t0, problem.t1, dt0)


def _check_steps(problem: Problem) -> None:
    """Constant steps need `dt0`; a grid Brownian path needs steps on its grid."""
    owner, dt0 = problem.owner, problem.dt0
    if isinstance(problem.stepsize_controller, diffrax.ConstantStepSize) and dt0 is None:
        raise ValueError(
            f"{owner}: {type(problem.solver).__name__} runs with a constant step, and neither "
            "the model nor a transform sets `dt0`. Pass a step, e.g. "
            "`neurde.noise.additive(model, 0.1, dt0=0.05)` or `NeuralODE(..., dt0=0.05)`."
        )
    if problem.diffusion is None or problem.brownian != "grid" or dt0 is None:
        return
    t0, t1 = problem.t0, problem.t1
    if is_concrete(t0) and is_concrete(t1) and not divides(t0, t1, dt0):
        raise ValueError(
            f"{owner}: brownian='grid' samples the Brownian motion every dt0 = {dt0}, but "
            f"t1 - t0 = {float(t1) - float(t0)} is not a multiple of it, so Diffrax's "
            "constant steps (the interval split evenly) would fall between grid points, "
            "where the interpolated path has too little variance. Choose dt0 dividing "
            "the interval, or brownian='tree'."
        )


def _check_fields(problem: Problem, y0: PyTree[Array], args: Any) -> None:
    owner = problem.owner
    _check_steps(problem)
    sde = problem.diffusion is not None
    role = "drift" if sde else "vector field"
    check_field_output(owner, role, problem.drift, problem.t0, y0, args, want=y0)
    if not sde:
        return
    if not isinstance(y0, jax.Array) or (problem.noise == "general" and y0.ndim != 1):
        kind = "one vector (shape (d,))" if problem.noise == "general" else "one array"
        raise ValueError(
            f"{owner}: with {problem.noise} noise the state must be {kind}; got "
            f"{jax.tree.map(jnp.shape, y0)}. Flatten it, or vmap over a batch axis."
        )
    shape = (*y0.shape, problem.noise_size) if problem.noise == "general" else y0.shape
    if problem.path is not None:
        _check_path(problem, y0)
    check_field_output(
        owner,
        f"diffusion (noise={problem.noise!r})",
        problem.diffusion,
        problem.t0,
        y0,
        args,
        want=jax.ShapeDtypeStruct(shape, y0.dtype),
    )


def _check_path(problem: Problem, y0: Array) -> None:
    """A given Brownian motion has the noise's shape and covers the solve's interval."""
    owner, path = problem.owner, problem.path
    assert path is not None
    want = noise_shape(problem, y0)
    got = jax.eval_shape(lambda: path.evaluate(problem.t0, problem.t1)).shape
    if tuple(got) != want:
        raise ValueError(
            f"{owner}: the given Brownian motion (`brownian=`) has shape {tuple(got)}, but "
            f"{problem.noise} noise on a state of shape {tuple(y0.shape)} needs {want}. "
            "Pass a path (or increments of shape (steps, *noise_shape)) of that shape."
        )
    end = problem.t1 if problem.brownian_t1 is None else problem.brownian_t1
    bounds = (problem.t0, end, path.t0, path.t1)
    if all(is_concrete(x) for x in bounds) and not (
        float(path.t0) <= float(problem.t0) and float(end) <= float(path.t1) + 1e-9
    ):
        raise ValueError(
            f"{owner}: the given Brownian motion (`brownian=`) covers [{path.t0}, {path.t1}], "
            f"but the solve needs [{problem.t0}, {end}]. Give a path (or more increments) "
            "over the whole interval."
        )


def _integrated(problem: Problem) -> bool:
    """Whether the extras are integrated along the solve (else they keep their values)."""
    return bool(problem.extras) and problem.augmented is not None


def _terms(problem: Problem, y0: Array) -> PyTree[diffrax.AbstractTerm]:
    extras = problem.extras if _integrated(problem) else None
    augmented = problem.augmented
    if extras is None or augmented is None:
        term = diffrax.ODETerm(problem.drift)
    else:
        term = diffrax.ODETerm(_WithExtras(augmented))
    if problem.diffusion is None:
        return term
    if problem.key is None and problem.path is None:
        raise ValueError(
            f"{problem.owner}: the problem has a diffusion but no key for its Brownian motion. "
            "Pass `key=` to the call."
        )
    noise = _Diffusion(problem.diffusion, _brownian(problem, y0), extras, problem.noise)
    return diffrax.MultiTerm(term, noise)


class _StateNorm(eqx.Module):
    """An error norm that sees only the state `y` of an augmented solve `(y, extras)`.

    The extras are running integrals of the drift: nothing feeds back from them into `y`, so
    their local error only matters to their own accuracy. Letting them drive step-size
    control would make the augmented solve take different (usually more) steps than the
    plain one; Finlay et al. give such components tolerances of 1e20 for the same reason.
    Any other structure (e.g. the backward state of `diffrax.BacksolveAdjoint`) is measured
    in full.
    """

    norm: Callable[[PyTree], Any]

    def __call__(self, tree: PyTree) -> Any:
        return self.norm(tree.y if isinstance(tree, _AugState) else tree)


def _state_only(controller: Any) -> Any:
    """`controller` with its error norm restricted to `y` (PID controllers, also clipped)."""
    if isinstance(controller, diffrax.PIDController):
        return eqx.tree_at(lambda c: c.norm, controller, _StateNorm(controller.norm))
    if isinstance(controller, diffrax.ClipStepSizeController):
        return eqx.tree_at(lambda c: c.controller, controller, _state_only(controller.controller))
    return controller


def _adjoint(problem: Problem) -> diffrax.AbstractAdjoint:
    """Give backprop one checkpoint per step when the number of steps is known.

    With `checkpoints=None`, Diffrax sizes its recursive checkpointing for `max_steps` and
    recomputes steps on the backward pass; with a constant step size and concrete times the
    exact count is known, and one checkpoint per step saves those recomputations (a few
    percent of a training step, benchmarks/ode_step.py).
    """
    adjoint, dt0 = problem.adjoint, problem.dt0
    if not (
        type(adjoint) is diffrax.RecursiveCheckpointAdjoint
        and adjoint.checkpoints is None
        and isinstance(problem.stepsize_controller, diffrax.ConstantStepSize)
        and dt0 is not None
        and all(is_concrete(x) for x in (problem.t0, problem.t1))
    ):
        return adjoint
    # +1 guards against a final sliver step from floating-point rounding of t0 + n dt0.
    steps = math.ceil((float(problem.t1) - float(problem.t0)) / float(dt0)) + 1
    return diffrax.RecursiveCheckpointAdjoint(checkpoints=steps)


def _raise_on_failure(problem: Problem, solution: diffrax.Solution) -> diffrax.Solution:
    """Turn an unsuccessful solve into an error that says what to try."""
    result = solution.result
    failed = result != diffrax.RESULTS.successful
    ys = eqx.branched_error_if(solution.ys, failed, result._value, _failure_messages(problem))
    return eqx.tree_at(lambda s: s.ys, solution, ys, is_leaf=lambda x: x is None)


def _failure_messages(problem: Problem) -> list[str]:
    """One error message per `diffrax.RESULTS` code, each saying what to try."""
    owner = problem.owner
    messages = [
        f"{owner}: the solve failed: {message} Check the field for NaN/inf, or try a "
        "smaller `dt0`, looser tolerances, or an implicit solver if the dynamics are stiff."
        for message in diffrax.RESULTS._index_to_message
    ]
    max_steps = diffrax.RESULTS.max_steps_reached._value
    messages[max_steps] = (
        f"{owner}: the solver reached `max_steps={problem.max_steps}` before the end of the "
        "interval. Try: raising `max_steps`; loosening the tolerances (`rtol`, `atol`); an "
        "implicit solver such as `diffrax.Kvaerno5()` if the dynamics are stiff; or "
        "regularizing the field so it stays smooth."
    )
    return messages


def integrate(problem: Problem, y0: PyTree[Any], ts: Any, args: Any) -> ModelSolution:
    """Solve `problem` from `y0`, saving at `ts` (or at `t1` only), with `args`."""
    solution = _integrate(problem, y0, ts, args)
    if problem.throw and isinstance(problem.stepsize_controller, diffrax.ConstantStepSize):
        solution = _raise_on_blow_up(problem, solution)
    return solution


def _raise_on_blow_up(problem: Problem, solution: ModelSolution) -> ModelSolution:
    """Constant steps never reject a step, so a solve that overflows (too large a step, too
    much noise) would return NaN or inf silently; this turns it into an error. Adaptive
    solves need no check: a non-finite error estimate shrinks the step until Diffrax fails."""
    leaves = jax.tree.leaves(solution.ys) + list(solution.extras.values())
    blown_up = jnp.any(jnp.stack([jnp.any(~jnp.isfinite(leaf)) for leaf in leaves]))
    ys = eqx.error_if(
        solution.ys,
        blown_up,
        f"{problem.owner}: the solution contains NaN or inf. With constant steps "
        f"(dt0={problem.dt0}) nothing stops a solve that blows up: try a smaller `dt0`, less "
        "noise (a smaller `sigma` in `neurde.noise`), or an adaptive solver; and check the "
        "field and its inputs for NaN/inf.",
    )
    return eqx.tree_at(lambda s: s.ys, solution, ys)


def _integrate(problem: Problem, y0: PyTree[Any], ts: Any, args: Any) -> ModelSolution:
    owner = problem.owner
    state = check_state(owner, y0)
    _check_fields(problem, state, args)
    state = promote_state(owner, problem.drift, problem.t0, state, args)
    # Scalar checks, once per solve (not per step), of values only known at run time.
    t1 = guard_interval(owner, problem.t0, problem.t1)
    controller = guard_tolerances(owner, problem.stepsize_controller)
    problem = dataclasses.replace(problem, t1=t1, stepsize_controller=controller)
    problem = counted(problem)  # only while `neurde.count_evaluations` traces
    extras = problem.extras if _integrated(problem) else {}
    if ts is not None:
        ts = check_times(owner, ts, problem.t0, problem.t1)
        dtype = jnp.result_type(ts.dtype, *(x.dtype for x in jax.tree.leaves(state)))
        ts = ts.astype(dtype)
    if isinstance(problem.adjoint, Reversible):
        return _reversible_integrate(problem, state, ts, args, extras)
    if scannable(problem):
        # Constant-step Euler–Maruyama/Heun on a grid Brownian path: one checkpointed scan.
        return scan_integrate(problem, state, ts, args)
    # The extras are read at t1, which is saved after `ts` when save times are given.
    saveat = diffrax.SaveAt(t1=ts is None or bool(extras), ts=ts)
    controller = problem.stepsize_controller
    if extras:
        controller = _state_only(controller)
    controller, saveat = counting(problem.solver, controller, saveat, problem.adjoint)
    solution = diffrax.diffeqsolve(
        _terms(problem, state),
        problem.solver,
        t0=problem.t0,
        t1=problem.t1,
        dt0=problem.dt0,
        y0=_AugState(state, dict(extras)) if extras else state,
        args=args,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=_adjoint(problem),
        max_steps=problem.max_steps,
        throw=False,
    )
    if problem.throw:
        solution = _raise_on_failure(problem, solution)
    ys: Any = solution.ys
    final: dict[str, Array] = dict(problem.extras)
    if extras:
        ys, final = ys.y, jax.tree.map(lambda x: x[-1], ys.extras)
        if ts is not None:
            ys = jax.tree.map(lambda y: y[:-1], ys)
    if ts is None:
        ys = jax.tree.map(lambda y: y[0], ys)
    stats = solver_stats(solution, problem.solver)
    return ModelSolution(ys, ts, stats, final, solution.result)


def _reversible_integrate(
    problem: Problem, y0: PyTree[Array], ts: Any, args: Any, extras: dict[str, Array]
) -> ModelSolution:
    """Solve with `neurde.Reversible`: reversible Runge–Kutta for an ODE, reversible Heun for
    an SDE (or an ODE solved with `diffrax.ReversibleHeun`)."""
    owner, solver, adjoint = problem.owner, problem.solver, problem.adjoint
    assert isinstance(adjoint, Reversible)
    sde = problem.diffusion is not None
    check_reversible(owner, solver, problem.stepsize_controller, sde)
    if not isinstance(problem.stepsize_controller, diffrax.ConstantStepSize):
        return _reversible_adaptive(problem, y0, ts, args, extras)
    n = grid_size(owner, problem.t0, problem.t1, problem.dt0, problem.max_steps)
    t0, dt = float(problem.t0), float(problem.dt0)  # type: ignore[arg-type]
    index = save_indices(owner, ts, t0, dt)
    final: dict[str, Array] = dict(problem.extras)
    if isinstance(solver, diffrax.ReversibleHeun):
        y_end, ys = _reversible_heun(problem, y0, args, n, index, extras)
        nfe = n + 1
    else:
        init: Any = _AugState(y0, dict(extras)) if extras else y0
        field = _WithExtras(problem.augmented) if extras else problem.drift  # type: ignore[arg-type]
        y_end, ys = reversible_rk(solver, adjoint.coupling, field, t0, dt, n, init, args, index)
        if extras:
            final = {**final, **y_end.extras}
            y_end, ys = y_end.y, None if ys is None else ys.y
        per_step = evaluations_per_step(solver)
        assert per_step is not None
        # Every base step recomputes all its stages (FSAL included), two base steps a step.
        nfe = 2 * n * (per_step + evaluations_at_start(solver))
    steps = jnp.asarray(n, jnp.int32)
    stats = {
        "nfe": jnp.asarray(nfe, jnp.int32),
        "num_steps": steps,
        "num_accepted_steps": steps,
        "num_rejected_steps": jnp.zeros((), jnp.int32),
    }
    return ModelSolution(y_end if ts is None else ys, ts, stats, final, diffrax.RESULTS.successful)


def _reversible_adaptive(
    problem: Problem, y0: PyTree[Array], ts: Any, args: Any, extras: dict[str, Array]
) -> ModelSolution:
    """The reversible solve with a `diffrax.PIDController`: accepted steps recorded forward,
    replayed backward (`neurde/_reversible_adaptive.py`)."""
    solver, adjoint, controller = problem.solver, problem.adjoint, problem.stepsize_controller
    assert isinstance(adjoint, Reversible)
    init: Any = _AugState(y0, dict(extras)) if extras else y0
    field = _WithExtras(problem.augmented) if extras else problem.drift  # type: ignore[arg-type]
    if extras:
        controller = _state_only(controller)
    settings = (problem.t0, problem.t1, problem.dt0, problem.max_steps)
    y_end, ys, (accepted, attempts, result) = reversible_adaptive(
        solver, controller, adjoint.coupling, field, *settings, init, args, ts
    )
    final: dict[str, Array] = dict(problem.extras)
    if extras:
        final = {**final, **y_end.extras}
        y_end, ys = y_end.y, None if ys is None else ys.y
    out = y_end if ts is None else ys
    if problem.throw:
        failed = result != diffrax.RESULTS.successful
        out = eqx.branched_error_if(out, failed, result._value, _failure_messages(problem))
    per_step = evaluations_per_step(solver)
    assert per_step is not None
    # Each attempt, accepted or rejected, takes two base steps with all their stages; the
    # initial step-size selection (`dt0=None`) evaluates the field twice.
    nfe = 2 * attempts * (per_step + evaluations_at_start(solver))
    nfe = nfe + (2 if problem.dt0 is None else 0)
    stats = {
        "nfe": nfe.astype(jnp.int32),
        "num_steps": attempts,
        "num_accepted_steps": accepted,
        "num_rejected_steps": attempts - accepted,
    }
    return ModelSolution(out, ts, stats, final, result)


def _reversible_heun(
    problem: Problem, y0: Any, args: Any, n: int, index: Any, extras: dict[str, Array]
) -> tuple[Any, Any]:
    owner, drift, diffusion = problem.owner, problem.drift, problem.diffusion
    if extras:
        raise ValueError(
            f"{owner}: adjoint='reversible' with `diffrax.ReversibleHeun` does not integrate "
            f"extra outputs ({sorted(extras)}). Use adjoint='backprop' for this model."
        )
    if not isinstance(y0, jax.Array):
        raise ValueError(
            f"{owner}: reversible Heun needs the state to be one array, got "
            f"{jax.tree.map(jnp.shape, y0)}. Flatten it."
        )
    t0, dt = float(problem.t0), float(problem.dt0)  # type: ignore[arg-type]
    if diffusion is None:
        return reversible_heun(
            lambda t, y, a: (drift(t, y, a),), None, (), t0, dt, n, y0, args, index, None, None
        )
    key, increments = problem.key, None
    if problem.path is not None:
        if not given_increments(problem):
            raise ValueError(
                f"{owner}: adjoint='reversible' needs the Brownian motion as increments on the "
                f"step grid (dt0 = {dt} from t0 = {t0}); the given `brownian=` path is not. "
                "Pass increments of shape (steps, *noise_shape) or a `neurde.GridBrownianPath` "
                "on that grid."
            )
        increments = problem.path.increments[:n]  # type: ignore[union-attr]
    elif problem.brownian != "grid":
        raise ValueError(
            f"{owner}: adjoint='reversible' draws the Brownian motion on the step grid; got "
            "brownian='tree'. Use brownian='grid' (the default with constant steps)."
        )

    def vf(t: Any, y: Any, a: Any) -> tuple[Any, Any]:
        return drift(t, y, a), diffusion(t, y, a)

    shape = noise_shape(problem, y0)
    return reversible_heun(vf, problem.noise, shape, t0, dt, n, y0, args, index, key, increments)
