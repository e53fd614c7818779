"""Brownian motion for `NeuralSDE`: a virtual tree, or increments sampled once on the step grid."""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._validation import check_key, is_concrete


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
    $\mathcal N(0, \Delta t)$ increments, drawn from `key` (step $k$'s from
    `jr.fold_in(key, k)`, see `brownian_increment`) or given (`increments`, e.g. drawn by
    another library or a paper's code), and $W$ is interpolated linearly between grid
    points, so increments over grid steps are exact. Evaluating it is an array lookup —
    several times cheaper than a virtual Brownian tree — and it is a deterministic function
    of its key, so backprop through the solver works. Use it with a constant step size equal
    to (a multiple of) `dt`; off-grid queries see the interpolation, not fresh Brownian
    detail.

    **Arguments:**

    - `t0`, `t1`: the interval; `t1 - t0` is `n` steps of `dt` (the last one may be shorter).
    - `dt`: the grid spacing (the solver's step).
    - `shape`: shape of $W$ (with `increments`, their trailing shape; may be omitted).
    - `dtype`: of $W$ (default: the default float type, or that of `increments`).
    - `key`: the randomness; or
    - `increments`: the `n` increments $W(t_{k+1}) - W(t_k)$, shape `(n, *shape)`.

    Exactly one of `key` and `increments`.
    """

    # Diffrax declares these as abstract variables; concrete floats here, as in its own paths.
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    increments: Float[Array, "steps ..."]
    values: Float[Array, "points ..."]
    levy_area: type[diffrax.BrownianIncrement] = eqx.field(static=True)

    def __init__(
        self,
        t0: float,
        t1: float,
        dt: float,
        shape: tuple[int, ...] | None = None,
        *,
        dtype: Any = None,
        key: PRNGKeyArray | None = None,
        increments: Any = None,
    ):
        self.t0 = float(t0)
        self.t1 = float(t1)
        self.dt = float(dt)
        if not (self.dt > 0 and self.t1 > self.t0):
            raise ValueError(
                f"GridBrownianPath: need t1 > t0 and dt > 0, got t0={t0}, t1={t1}, dt={dt}."
            )
        n = math.ceil((self.t1 - self.t0) / self.dt - 1e-9)
        if (key is None) == (increments is None):
            raise ValueError(
                "GridBrownianPath: pass exactly one of `key` (to draw the increments) and "
                "`increments` (to use given ones)."
            )
        if increments is not None:
            steps = jnp.asarray(increments) if dtype is None else jnp.asarray(increments, dtype)
            if not jnp.issubdtype(steps.dtype, jnp.floating):
                steps = steps.astype(jnp.result_type(float))
            want = None if shape is None else (n, *shape)
            if steps.ndim == 0 or steps.shape[0] != n or (want and steps.shape != want):
                expected = f"({n}, *shape)" if want is None else str(want)
                raise ValueError(
                    f"GridBrownianPath: `increments` must have shape {expected}: one increment "
                    f"per step of dt={dt} on [{t0}, {t1}]; got shape {steps.shape}."
                )
            shape = tuple(steps.shape[1:])
            if is_concrete(steps) and not bool(jnp.all(jnp.isfinite(steps))):
                raise ValueError("GridBrownianPath: `increments` contain NaN or inf.")
        else:
            if shape is None:
                raise ValueError("GridBrownianPath: drawing from `key` needs `shape`.")
            dtype = jnp.result_type(float) if dtype is None else dtype
            shape, source = tuple(shape), check_key("GridBrownianPath", key)
            if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
                raise ValueError(
                    "GridBrownianPath: `shape` must be a tuple of non-negative integers, got "
                    f"{shape!r}."
                )
            assert source is not None  # exactly one of key and increments
            steps = jax.vmap(lambda k: brownian_increment(source, k, shape, self.dt, dtype))(
                jnp.arange(n)
            )
        self.increments = steps
        zero = jnp.zeros((1, *shape), steps.dtype)
        self.values = jnp.concatenate([zero, jnp.cumsum(steps, 0)])
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
