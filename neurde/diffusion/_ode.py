"""The one place `neurde.diffusion` solves an ODE: through `neurde.NeuralODE`.

`ProbabilityFlow` (the probability-flow ODE of a batch, from $T$ to the data) and
`log_likelihood` (the same ODE with its divergence, from the data to $T$) build a
`NeuralODE` and solve it here, so they get neurde's validation of the state and the field,
its failure messages (e.g. `max_steps` reached) and its tolerances as arrays.
"""

import dataclasses

from jaxtyping import Array, Int, PyTree

from .._solve import integrate
from .._types import Args
from ..ode import NeuralODE


def solve_ode(
    owner: str, ode: NeuralODE, y0: PyTree[Array], args: Args
) -> tuple[PyTree[Array], Int[Array, ""]]:
    """Solve `ode` from `y0` at its `t0` to its `t1`; errors are reported as `owner`'s.

    **Returns:**

    `(y1, nfe)`: the state at `t1` (the structure of `y0`) and the number of evaluations
    of the vector field.
    """
    problem = dataclasses.replace(ode.problem(y0, None, args=args, key=None), owner=owner)
    sol = integrate(problem, y0, None, args)
    return sol.ys, sol.stats["nfe"]
