"""The cubic spiral of the neural ODE demo (Chen et al. 2018, torchdiffeq `ode_demo`)."""

import functools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, Real

from . import _checks
from ._integrate import integrate
from .trajectories import Trajectories

_MATRIX = ((-0.1, 2.0), (-2.0, -0.1))


def spiral_field(
    t: Real[Array, ""] | float, y: Float[Array, " 2"], args: None
) -> Float[Array, " 2"]:
    r"""Vector field of the cubic spiral of the neural ODE demo.

    $$\frac{dy}{dt} = (y^3) A, \qquad A = \begin{pmatrix} -0.1 & 2 \\ -2 & -0.1 \end{pmatrix},$$

    with $y$ a row vector and the cube taken elementwise. The flow turns counter-clockwise
    and decays slowly towards the origin; the angular speed is between $r^2$ and $2r^2$ and the
    radius decays like $dr/dt \approx -0.1 r^3$, so both slow down as $r$ shrinks.

    **Arguments:**

    - `t`: time (unused; the field is autonomous).
    - `y`: a state of shape `(2,)`.
    - `args`: unused, pass `None`.

    **Returns:**

    $dy/dt$, shape `(2,)`.

    References:
        Chen, Rubanova, Bettencourt, Duvenaud. "Neural Ordinary Differential Equations".
        NeurIPS 2018. `examples/ode_demo.py` of https://github.com/rtqichen/torchdiffeq.
    """
    del t, args
    _checks.pairs("spiral_field", "y", y)
    return (y**3) @ jnp.asarray(_MATRIX, dtype=y.dtype)


def spiral(
    n_trajectories: int = 256,
    n_times: int = 50,
    *,
    t1: float = 10.0,
    noise: float = 0.02,
    min_radius: float = 1.0,
    max_radius: float = 1.5,
    dtype=None,
    key: PRNGKeyArray,
) -> Trajectories:
    r"""Noisy trajectories of the cubic spiral of the neural ODE demo.

    Each initial state is $y_0 = r(\cos\theta, \sin\theta)$ with
    $r \sim U(\text{min\_radius}, \text{max\_radius})$ and $\theta \sim U(0, 2\pi)$,
    integrated through [`neurde.data.spiral_field`][] (Tsit5, PID controller at
    `rtol = atol = 1e-8` in `dtype`) and observed at `ts = linspace(0, t1, n_times)` as
    $y = \text{clean} + \text{noise}\cdot\varepsilon$, $\varepsilon \sim N(0, I)$.

    With the defaults a trajectory makes about 1.3 (from $r = 1$) to 2.4 (from $r = 1.5$)
    counter-clockwise turns while its radius shrinks to about 0.6-0.8: a rounded-square
    spiral, clearly visible at 50 samples and not stiff (a few hundred solver steps). The
    demo's radius 0.5 is not used as the default minimum because it makes barely half a turn
    by $t = 10$.

    **Arguments:**

    - `n_trajectories`: number of trajectories, at least 1.
    - `n_times`: number of observation times, at least 2.
    - `t1`: final time, > 0.
    - `noise`: standard deviation of the additive Gaussian observation noise, >= 0.
    - `min_radius`, `max_radius`: range of initial radii, `0 <= min_radius <= max_radius`.
    - `dtype`: floating dtype of the data and of the integration;
      default `None`: JAX's default float (float64 with x64 on).
    - `key`: a JAX PRNG key.

    **Returns:**

    [`neurde.data.Trajectories`][] with `ys` and `clean` of shape `(n_trajectories, n_times, 2)`.

    References:
        Chen, Rubanova, Bettencourt, Duvenaud. "Neural Ordinary Differential Equations".
        NeurIPS 2018.
    """
    fn = "spiral"
    n_trajectories = _checks.count(fn, "n_trajectories", n_trajectories, 1)
    n_times = _checks.count(fn, "n_times", n_times, 2)
    t1 = _checks.positive(fn, "t1", t1)
    noise = _checks.nonnegative(fn, "noise", noise)
    min_radius = _checks.nonnegative(fn, "min_radius", min_radius)
    max_radius = _checks.number(fn, "max_radius", max_radius)
    if max_radius < min_radius:
        raise ValueError(
            f"`spiral(..., min_radius={min_radius!r}, max_radius={max_radius!r})`: "
            "`max_radius` must be >= `min_radius`. Swap them or widen the range."
        )
    dtype = _checks.float_dtype(fn, dtype)
    _checks.prng_key(fn, key)

    return _sample(key, n_trajectories, n_times, t1, noise, min_radius, max_radius, dtype)


@functools.partial(jax.jit, static_argnames=("n_trajectories", "n_times", "dtype"))
def _sample(key, n_trajectories, n_times, t1, noise, min_radius, max_radius, dtype):
    # One compilation per shape and dtype; the float parameters are traced.
    radius_key, angle_key, noise_key = jr.split(key, 3)
    ts = jnp.linspace(0.0, t1, n_times, dtype=dtype)
    radius = jr.uniform(radius_key, (n_trajectories,), dtype, min_radius, max_radius)
    angle = jr.uniform(angle_key, (n_trajectories,), dtype, 0.0, 2 * math.pi)
    y0 = radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    clean = integrate(spiral_field, y0, ts)
    ys = clean + noise * jr.normal(noise_key, clean.shape, dtype)
    return Trajectories(ts=ts, ys=ys, clean=clean)
