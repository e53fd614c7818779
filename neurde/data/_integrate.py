"""Batched, high-accuracy integration of a vector field for the data generators."""

from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

# Reference data should be far more accurate than any model fitted to it. 1e-8 is below
# float32 resolution, but the PID controller then simply takes the smallest steps that
# float32 can resolve; a few hundred steps per trajectory for the default generators.
_TOLERANCE = 1e-8
_MAX_STEPS = 2**16


@eqx.filter_jit
def integrate(
    field: Callable[[Any, Any, Any], Any],
    y0s: Float[Array, "n dim"],
    ts: Float[Array, " times"],
    args: Any = None,
) -> Float[Array, "n times dim"]:
    """Solve `dy/dt = field(t, y, args)` from each row of `y0s`, saving at `ts`.

    Tsit5 with a PID controller at `rtol = atol = 1e-8` (as arrays in the dtype of `ts`),
    vmapped over initial states. Failures raise (`throw=True`).
    """
    tolerance = jnp.asarray(_TOLERANCE, dtype=ts.dtype)
    controller = dfx.PIDController(rtol=tolerance, atol=tolerance)

    def solve(y0):
        solution = dfx.diffeqsolve(
            dfx.ODETerm(field),
            dfx.Tsit5(),
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            args=args,
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=controller,
            max_steps=_MAX_STEPS,
        )
        assert solution.ys is not None  # for pyright: SaveAt(ts=...) always saves
        return solution.ys

    return jax.vmap(solve)(y0s)
