"""Brownian motion for `NeuralSDE`: a virtual tree, or increments sampled once on the step grid."""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


def brownian_increment(
    key: PRNGKeyArray, step: Any, shape: tuple[int, ...], dt: float, dtype: Any
) -> Array:
    r"""The Brownian increment over the `step`-th step of a grid of spacing `dt`:
    $\sqrt{dt}\,\xi$ with $\xi \sim \mathcal N(0, I)$ drawn from `jr.fold_in(key, step)`.

    Drawn per step, a path depends only on its key and the step index: the same numbers
    whether the increments are sampled all at once (`GridBrownianPath`) or one by one
    inside a solver's loop (the fixed-step scan of `NeuralSDE(..., brownian="grid")`).
    """
    xi = jr.normal(jr.fold_in(key, step), shape, dtype)
    return xi * jnp.sqrt(jnp.asarray(dt, dtype))


class GridBrownianPath(diffrax.AbstractBrownianPath):
    r"""Brownian motion sampled once on a uniform grid $t_0 + k\,\Delta t$.

    The values $W(t_0 + k\Delta t)$ are a cumulative sum of independent
    $\mathcal N(0, \Delta t)$ increments drawn from `key`, and $W$ is interpolated linearly
    between grid points, so increments over grid steps are exact. Evaluating it is an array
    lookup — several times cheaper than a virtual Brownian tree — and it is a deterministic
    function of `key`, so backprop through the solver works. Use it with a constant step
    size equal to (a multiple of) `dt`; off-grid queries see the interpolation, not fresh
    Brownian detail.

    **Arguments:**

    - `t0`, `t1`: the interval.
    - `dt`: the grid spacing (the solver's step).
    - `shape`: shape of $W$.
    - `key`: the randomness.
    """

    # Diffrax declares these as abstract variables; concrete floats here, as in its own paths.
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    values: Float[Array, "points ..."]
    levy_area: type[diffrax.BrownianIncrement] = eqx.field(static=True)

    def __init__(
        self,
        t0: float,
        t1: float,
        dt: float,
        shape: tuple[int, ...],
        *,
        dtype: Any = None,
        key: PRNGKeyArray,
    ):
        self.t0 = float(t0)
        self.t1 = float(t1)
        self.dt = float(dt)
        n = math.ceil((self.t1 - self.t0) / self.dt - 1e-9)
        dtype = jnp.result_type(float) if dtype is None else dtype
        # Step k's increment from `jr.fold_in(key, k)`, as the scan path draws it in its loop
        # (`neurde._scan_solve.brownian_increment`): both give the same path from one key.
        steps = jax.vmap(lambda k: brownian_increment(key, k, shape, self.dt, dtype))(jnp.arange(n))
        self.values = jnp.concatenate([jnp.zeros((1, *shape), dtype), jnp.cumsum(steps, 0)])
        self.levy_area = diffrax.BrownianIncrement

    def _at(self, t: Any) -> Array:
        s = jnp.clip((t - self.t0) / self.dt, 0, self.values.shape[0] - 1)
        lo = jnp.clip(jnp.floor(s).astype(jnp.int32), 0, self.values.shape[0] - 2)
        frac = (s - lo).astype(self.values.dtype)
        return self.values[lo] + frac * (self.values[lo + 1] - self.values[lo])

    def evaluate(self, t0: Any, t1: Any = None, left: bool = True, use_levy: bool = False) -> Any:
        del left
        value = self._at(t0) if t1 is None else self._at(t1) - self._at(t0)
        if use_levy:
            dt = 0.0 if t1 is None else t1 - t0
            return diffrax.BrownianIncrement(dt=dt, W=value)
        return value
