r"""`Problem`: one continuous solve, fully specified, as the continuous models describe it.

A continuous model does not call Diffrax itself: its `problem(...)` method returns a
`Problem` (the drift, the diffusion and its noise structure, the interval, the solver
configuration, the Brownian motion, the extra outputs), and neurde integrates it. A wrapper
such as a noise injection, STEER or RNODE asks the model it wraps for its problem and returns
a changed one (more diffusion, another end time, extra outputs), so any stack of wrappers is
solved by the same single call to `diffrax.diffeqsolve`.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
from jaxtyping import Array, PRNGKeyArray

from ._config import BrownianKind, NoiseType


class Problem(eqx.Module):
    r"""$dy = f(t, y, \text{args})\,dt + g(t, y, \text{args})\,dW_t$ on $[t_0, t_1]$, with extras.

    Built by `AbstractContinuousModel.problem` once per traced call, so its fields may be
    closures and traced values. Change one with `dataclasses.replace(problem, field=value)`.

    **Fields:**

    - `drift`: $f(t, y, \text{args})$, returning the structure of `y`.
    - `t0`, `t1`: the interval (`t1` may be traced, e.g. STEER's random end time).
    - `solver`, `stepsize_controller`, `adjoint`, `dt0`, `max_steps`, `throw`: as for
      `diffrax.diffeqsolve`; the controller is the resolved one, never `None`.
    - `owner`: the name used in error messages (the model that set up the solve).
    - `diffusion`: $g(t, y, \text{args})$, or `None` for an ODE. Its shape follows `noise`:
      the state's shape for `"diagonal"` (one Brownian motion per entry) and `"scalar"` (one
      shared Brownian motion), `(d, noise_size)` for `"general"`.
    - `noise`, `noise_size`: the noise structure and, for general noise, the Brownian
      dimension.
    - `brownian`, `brownian_tol`: a `diffrax.VirtualBrownianTree` (`"tree"`, resolution
      `brownian_tol`, default `dt0 / 2`) or a `neurde.GridBrownianPath` on the step grid
      (`"grid"`).
    - `brownian_t1`: a concrete upper bound of `t1` when `t1` is traced (the Brownian motion
      is sampled on `[t0, brownian_t1]`); `None` means `t1`.
    - `path`: a given Brownian motion (any `diffrax.AbstractPath` with the noise's shape),
      which replaces `brownian` and the key's; `None` to draw one from `key`.
    - `key`: the Brownian motion's key (needed when there is a diffusion and no `path`).
    - `extras`: the extra outputs integrated along the solve, by name, with their initial
      values (scalars, usually zeros); empty for none.
    - `augmented`: with extras, `augmented(t, y, args) -> (dy, dextras)`: the drift and the
      integrands of the extras, evaluated together (so a Jacobian penalty can share the
      drift's evaluation). Step-size control sees `y` only.
    """

    drift: Callable[..., Any]
    t0: Any
    t1: Any
    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController
    adjoint: diffrax.AbstractAdjoint
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    owner: str = eqx.field(static=True)
    diffusion: Callable[..., Any] | None = None
    noise: NoiseType = eqx.field(static=True, default="diagonal")
    noise_size: int | None = eqx.field(static=True, default=None)
    brownian: BrownianKind = eqx.field(static=True, default="tree")
    brownian_tol: float | None = eqx.field(static=True, default=None)
    brownian_t1: float | None = eqx.field(static=True, default=None)
    path: diffrax.AbstractPath | None = None
    key: PRNGKeyArray | None = None
    extras: dict[str, Array] = eqx.field(default_factory=dict)
    augmented: Callable[..., Any] | None = None
