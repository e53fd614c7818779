"""Solver statistics: steps taken, accepted, rejected, and vector-field evaluations."""

import diffrax
import jax.numpy as jnp
from jaxtyping import Array, Int

from .solvers import evaluations_at_start, evaluations_per_step


def solver_stats(
    solution: diffrax.Solution,
    solver: diffrax.AbstractSolver,
) -> dict[str, Int[Array, ""]]:
    """Statistics of one solve, including the number of function evaluations (NFE).

    NFE counts evaluations of the (drift) vector field in the forward solve:
    `num_steps * evaluations_per_step(solver)` plus the evaluations spent before the first
    step (the first stage of FSAL methods). Rejected steps cost as much as accepted ones and
    are included. The backward pass of a gradient is not counted. The count is checked
    against a counting callback in the tests.

    **Arguments:**

    - `solution`: what `diffrax.diffeqsolve` returned.
    - `solver`: the solver that produced it.

    **Returns:**

    A dict with integer scalars `nfe` (-1 when the solver's cost per step is unknown, e.g.
    implicit solvers), `num_steps`, `num_accepted_steps`, `num_rejected_steps`.
    """
    stats = solution.stats
    num_steps = jnp.asarray(stats["num_steps"])
    per_step = evaluations_per_step(solver)
    if per_step is None:
        nfe = jnp.full_like(num_steps, -1)
    else:
        nfe = num_steps * per_step + evaluations_at_start(solver)
    return {
        "nfe": nfe,
        "num_steps": num_steps,
        "num_accepted_steps": jnp.asarray(stats["num_accepted_steps"]),
        "num_rejected_steps": jnp.asarray(stats["num_rejected_steps"]),
    }


__all__ = ["solver_stats"]
