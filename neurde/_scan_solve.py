r"""The fast fixed-step path of SDE solves: one `lax.scan`, Brownian increments drawn in the loop.

A constant-step Euler–Maruyama (or Heun) solve on the step grid of a
`neurde.GridBrownianPath` needs none of `diffrax.diffeqsolve`'s machinery: no step-size
control, no Brownian tree, no dense output beyond the local interpolation. `integrate` sends
such problems here (`brownian="grid"`, `diffrax.Euler` or `diffrax.Heun`, a constant step
`dt0` that divides a concrete interval, backprop through the solve), and they run as one
`lax.scan` whose body is rematerialized on the backward pass (`jax.checkpoint`), the form
that is fastest on XLA:CPU (benchmarks/sde_step.py measures it against the same loop
written by hand).

The $k$-th increment is $\sqrt{\Delta t}\,\xi_k$ with $\xi_k$ drawn from
`jr.fold_in(key, k)`: the same numbers `neurde.GridBrownianPath` draws from the same key,
so the result equals Diffrax's solve on that path up to floating-point rounding, and a path
depends only on its own key (under `vmap` with one key per example it does not depend on
the batch or on how the batch is split).
"""

from typing import Any

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._validation import is_concrete
from .brownian import GridBrownianPath, brownian_increment
from .problem import Problem
from .solution import ModelSolution
from .solvers import evaluations_at_start, evaluations_per_step

# Solvers the scan reproduces exactly, with their Butcher tableau: the nodes `c` of the
# stages after the first, and the weights `b` of the stages in the update.
_TABLEAUX: dict[type, tuple[tuple[float, ...], tuple[float, ...]]] = {
    diffrax.Euler: ((), (1.0,)),
    diffrax.Heun: ((1.0,), (0.5, 0.5)),
}


def grid_steps(t0: float, t1: float, dt0: float) -> int:
    """The number of steps of `dt0` from `t0` to `t1` (which it divides)."""
    return max(1, round((float(t1) - float(t0)) / dt0))


def given_increments(problem: Problem) -> bool:
    """Whether the problem's given Brownian motion is increments on its own step grid."""
    path = problem.path
    return (
        isinstance(path, GridBrownianPath)
        and problem.dt0 is not None
        and is_concrete(problem.t0)
        and path.t0 == float(problem.t0)
        and abs(path.dt - problem.dt0) <= 1e-12 * problem.dt0
    )


def scannable(problem: Problem) -> bool:
    """Whether `problem` runs on the scan path (else through `diffrax.diffeqsolve`)."""
    grid = problem.brownian == "grid" if problem.path is None else given_increments(problem)
    return (
        problem.diffusion is not None
        and grid
        and type(problem.solver) in _TABLEAUX
        and isinstance(problem.stepsize_controller, diffrax.ConstantStepSize)
        and problem.dt0 is not None
        and type(problem.adjoint) is diffrax.RecursiveCheckpointAdjoint
        and problem.brownian_t1 is None
        and all(is_concrete(x) for x in (problem.t0, problem.t1))
    )


def noise_shape(problem: Problem, y: Array) -> tuple[int, ...]:
    """The shape of the Brownian motion of `problem` for the state `y`."""
    if problem.noise == "diagonal":
        return tuple(y.shape)
    if problem.noise == "scalar":
        return ()
    assert problem.noise_size is not None
    return (problem.noise_size,)


def _interpolate(
    ys: Array, ks: tuple[Array, Array] | None, ts: Array, t0: float, dt: float
) -> Array:
    """Diffrax's dense output of the grid solve `ys` (states at `t0 + k dt`) at `ts`: linear
    for Euler; for Heun the cubic Hermite polynomial of each step through its end states
    with slopes its first and last stage increments `ks`."""
    n = ys.shape[0] - 1
    s = (ts - t0) / dt
    lo = jnp.clip(jnp.floor(s).astype(jnp.int32), 0, n - 1)
    theta = (s - lo).astype(ys.dtype).reshape(-1, *([1] * (ys.ndim - 1)))
    y0, y1 = ys[lo], ys[lo + 1]
    if ks is None:
        return y0 + theta * (y1 - y0)
    k0, k1 = ks[0][lo], ks[1][lo]
    a = k0 + k1 + 2 * y0 - 2 * y1
    b = -2 * k0 - k1 - 3 * y0 + 3 * y1
    return ((a * theta + b) * theta + k0) * theta + y0


def scan_integrate(
    problem: Problem,
    y0: Array,
    ts: Array | None,
    args: Any,
) -> ModelSolution:
    """Solve a `scannable` problem from `y0` (checked by `integrate`), saving at `ts` (or at
    `t1` only); the extras are integrated along the solve when `problem.augmented` is set."""
    owner = problem.owner
    t0, t1, dt = float(problem.t0), float(problem.t1), float(problem.dt0)  # type: ignore[arg-type]
    n = grid_steps(t0, t1, dt)
    if n > problem.max_steps:
        raise ValueError(
            f"{owner}: the solve takes {n} steps of dt0 = {dt} from {t0} to {t1}, more than "
            f"`max_steps={problem.max_steps}`. Raise `max_steps` or take a larger `dt0`."
        )
    nodes, weights = _TABLEAUX[type(problem.solver)]
    key, path = problem.key, problem.path
    shape = noise_shape(problem, y0)
    diffusion = problem.diffusion
    assert diffusion is not None
    general = problem.noise == "general"
    augmented = problem.augmented if problem.extras else None
    extras = dict(problem.extras) if augmented is not None else {}
    dtype = y0.dtype

    def vector_fields(t: Any, y: Array, dw: Array) -> tuple[Array, dict[str, Array]]:
        """One stage: the state increment f dt + g dW and the extras' increments."""
        if augmented is None:
            f, dextras = problem.drift(t, y, args), {}
        else:
            f, dextras = augmented(t, y, args)
        g = diffusion(t, y, args)
        dy = f * dt + (g @ dw if general else g * dw)
        dex = {k: jnp.asarray(dextras.get(k, 0.0), dtype) * dt for k in extras}
        return dy.astype(dtype), dex

    def step(carry: tuple[Array, dict[str, Array]], xs: Any) -> Any:
        y, ex = carry
        k, given = xs
        t = t0 + k.astype(dtype) * dt
        if given is not None:
            dw = given.astype(dtype)
        else:
            assert key is not None  # checked by `integrate`
            dw = brownian_increment(key, k, shape, dt, dtype)
        stages = [vector_fields(t, y, dw)]
        for c in nodes:
            # Explicit RK stages on the combined increment (Heun: the predictor y + k1).
            y_stage = y + stages[-1][0]
            stages.append(vector_fields(t + c * dt, y_stage, dw))
        y = y + sum((b * s[0] for b, s in zip(weights, stages, strict=True)), jnp.zeros_like(y))
        ex = {
            name: ex[name] + sum(b * s[1][name] for b, s in zip(weights, stages, strict=True))
            for name in ex
        }
        if ts is None:
            return (y, ex), None
        slopes = (stages[0][0], stages[-1][0]) if nodes else None
        return (y, ex), (y, slopes)

    init = (y0, {k: jnp.asarray(v, dtype) for k, v in extras.items()})
    (y_end, ex_end), saved = jax.lax.scan(
        jax.checkpoint(step),  # pyright: ignore[reportArgumentType]
        init,
        (jnp.arange(n), None if path is None else path.increments[:n]),  # type: ignore[union-attr]
    )
    if ts is None:
        ys = y_end
    else:
        ys_steps, slopes = saved
        ys = _interpolate(jnp.concatenate([y0[None], ys_steps]), slopes, ts, t0, dt)
    num_steps = jnp.asarray(n, jnp.int32)
    per_step = evaluations_per_step(problem.solver)
    assert per_step is not None
    stats = {
        "nfe": num_steps * per_step + evaluations_at_start(problem.solver),
        "num_steps": num_steps,
        "num_accepted_steps": num_steps,
        "num_rejected_steps": jnp.zeros((), jnp.int32),
    }
    final = {**problem.extras, **ex_end}
    return ModelSolution(ys, ts, stats, final, diffrax.RESULTS.successful)


__all__ = ["given_increments", "grid_steps", "noise_shape", "scan_integrate", "scannable"]
