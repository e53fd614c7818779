r"""Ideal (energy-conserving) Hamiltonian systems: a mass on a spring and a pendulum.

States are $[q, p]$ (position, momentum), the layout of `neurde.continuous.HamiltonianNN`,
and each system comes with its exact energy, so rollouts can be checked for energy drift.
"""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks
from ._integrate import integrate
from .trajectories import Trajectories


def mass_spring_energy(
    y: Float[Array, "... 2"], *, mass: float = 1.0, stiffness: float = 1.0
) -> Float[Array, "..."]:
    r"""The energy $H(q, p) = p^2 / 2m + k q^2 / 2$ of a mass on a spring.

    **Arguments:**

    - `y`: states $[q, p]$ on the last axis (any leading axes).
    - `mass`, `stiffness`: $m$ and $k$.

    **Returns:**

    $H$ for each state, the shape of `y` without its last axis.
    """
    _checks.pairs("mass_spring_energy", "y", y)
    q, p = y[..., 0], y[..., 1]
    return p**2 / (2 * mass) + stiffness * q**2 / 2


def pendulum_energy(
    y: Float[Array, "... 2"], *, mass: float = 1.0, length: float = 1.0, gravity: float = 1.0
) -> Float[Array, "..."]:
    r"""The energy $H(q, p) = p^2 / 2 m l^2 + m g l (1 - \cos q)$ of an ideal pendulum.

    **Arguments:**

    - `y`: states $[q, p]$ (angle, angular momentum) on the last axis.
    - `mass`, `length`, `gravity`: $m$, $l$, $g$.

    **Returns:**

    $H$ for each state, the shape of `y` without its last axis.
    """
    _checks.pairs("pendulum_energy", "y", y)
    q, p = y[..., 0], y[..., 1]
    return p**2 / (2 * mass * length**2) + mass * gravity * length * (1 - jnp.cos(q))


def _pendulum_field(t, y, args):
    del t
    mass, length, gravity = args
    return jnp.stack([y[1] / (mass * length**2), -mass * gravity * length * jnp.sin(y[0])])


def _initial_states(key, n, low, high, dtype):
    # Uniform in radius (so low energies are not crowded out) and in angle, in (q, p) space.
    radius_key, angle_key = jr.split(key)
    radius = jr.uniform(radius_key, (n,), dtype, low, high)
    angle = jr.uniform(angle_key, (n,), dtype, 0.0, 2 * jnp.pi)
    return jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)


@functools.partial(jax.jit, static_argnames=("n_trajectories", "n_times", "system", "dtype"))
def _sample(key, n_trajectories, n_times, t1, radius, params, noise, system, dtype):
    init_key, noise_key = jr.split(key)
    ts = jnp.linspace(0.0, t1, n_times, dtype=dtype)
    y0 = _initial_states(init_key, n_trajectories, radius[0], radius[1], dtype)
    params = tuple(jnp.asarray(x, dtype) for x in params)
    if system == "mass_spring":
        mass, stiffness = params
        omega = jnp.sqrt(stiffness / mass)
        c, s = jnp.cos(omega * ts)[None], jnp.sin(omega * ts)[None]
        q0, p0 = y0[:, 0:1], y0[:, 1:2]
        q = q0 * c + p0 / (mass * omega) * s
        p = p0 * c - mass * omega * q0 * s
        clean = jnp.stack([q, p], axis=-1)
    else:
        clean = integrate(_pendulum_field, y0, ts, params)
    ys = clean + noise * jr.normal(noise_key, clean.shape, dtype)
    return Trajectories(ts=ts, ys=ys, clean=clean)


def _check_radius(fn: str, radius: tuple[float, float]) -> tuple[float, float]:
    if not isinstance(radius, tuple) or len(radius) != 2:
        raise TypeError(
            f"`{fn}(..., radius={radius!r})`: `radius` must be a pair (low, high), "
            "e.g. radius=(0.2, 1.0)."
        )
    low = _checks.nonnegative(fn, "radius[0]", radius[0])
    high = _checks.positive(fn, "radius[1]", radius[1])
    if low >= high:
        raise ValueError(
            f"`{fn}(..., radius={radius!r})`: need radius[0] < radius[1]. "
            "Pass e.g. radius=(0.2, 1.0)."
        )
    return low, high


def _common(fn, n_trajectories, n_times, t1, radius, noise, dtype, key):
    n_trajectories = _checks.count(fn, "n_trajectories", n_trajectories, 1)
    n_times = _checks.count(fn, "n_times", n_times, 2)
    t1 = _checks.positive(fn, "t1", t1)
    radius = _check_radius(fn, radius)
    noise = _checks.nonnegative(fn, "noise", noise)
    dtype = _checks.float_dtype(fn, dtype)
    _checks.prng_key(fn, key)
    return n_trajectories, n_times, t1, radius, noise, dtype


def mass_spring(
    n_trajectories: int = 256,
    n_times: int = 50,
    *,
    t1: float = 2 * jnp.pi,
    mass: float = 1.0,
    stiffness: float = 1.0,
    radius: tuple[float, float] = (0.2, 1.0),
    noise: float = 0.0,
    dtype=None,
    key: PRNGKeyArray,
) -> Trajectories:
    r"""Exact trajectories of an ideal mass on a spring, $H = p^2/2m + k q^2/2$.

    $q(t) = q_0\cos\omega t + \frac{p_0}{m\omega}\sin\omega t$,
    $p(t) = p_0\cos\omega t - m\omega q_0\sin\omega t$, $\omega = \sqrt{k/m}$; the energy
    ([`neurde.data.mass_spring_energy`][]) is constant along each. Initial states
    $(q_0, p_0) = r(\cos\phi, \sin\phi)$ with $r \sim U(\text{radius})$,
    $\phi \sim U(0, 2\pi)$. Observations are `clean + noise * N(0, 1)` at
    `ts = linspace(0, t1, n_times)`; the default `t1` is one period for $k = m = 1$.

    **Arguments:**

    - `n_trajectories`: number of trajectories, at least 1.
    - `n_times`: number of observation times, at least 2.
    - `t1`: final time, > 0.
    - `mass`, `stiffness`: $m > 0$ and $k > 0$.
    - `radius`: range `(low, high)` of the initial radius in the $(q, p)$ plane.
    - `noise`: standard deviation of the Gaussian observation noise, >= 0.
    - `dtype`: floating dtype of the data;
      default `None`: JAX's default float (float64 with x64 on).
    - `key`: a JAX PRNG key.

    **Returns:**

    [`neurde.data.Trajectories`][] with `ys` and `clean` of shape `(n_trajectories, n_times, 2)`,
    the last axis $[q, p]$.

    References: Greydanus, Dzamba, Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019
    (the ideal mass-spring task).
    """
    fn = "mass_spring"
    checked = _common(fn, n_trajectories, n_times, t1, radius, noise, dtype, key)
    n_trajectories, n_times, t1, radius, noise, dtype = checked
    params = (_checks.positive(fn, "mass", mass), _checks.positive(fn, "stiffness", stiffness))
    return _sample(key, n_trajectories, n_times, t1, radius, params, noise, "mass_spring", dtype)


def pendulum(
    n_trajectories: int = 256,
    n_times: int = 50,
    *,
    t1: float = 2 * jnp.pi,
    mass: float = 1.0,
    length: float = 1.0,
    gravity: float = 1.0,
    radius: tuple[float, float] = (0.2, 1.0),
    noise: float = 0.0,
    dtype=None,
    key: PRNGKeyArray,
) -> Trajectories:
    r"""Trajectories of an ideal pendulum, $H = p^2 / 2 m l^2 + m g l (1 - \cos q)$.

    $\dot q = p / m l^2$, $\dot p = -m g l \sin q$, integrated with Tsit5 at
    `rtol = atol = 1e-8`; the energy ([`neurde.data.pendulum_energy`][]) is conserved to
    that accuracy. Initial states as in [`neurde.data.mass_spring`][]; with the defaults the
    pendulum swings (no full turns: $H < 2 m g l$) with a period a little above $2\pi$.

    **Arguments:**

    - `n_trajectories`: number of trajectories, at least 1.
    - `n_times`: number of observation times, at least 2.
    - `t1`: final time, > 0.
    - `mass`, `length`, `gravity`: $m$, $l$, $g$, all > 0.
    - `radius`: range `(low, high)` of the initial radius in the $(q, p)$ plane.
    - `noise`: standard deviation of the Gaussian observation noise, >= 0.
    - `dtype`: floating dtype of the data;
      default `None`: JAX's default float (float64 with x64 on).
    - `key`: a JAX PRNG key.

    **Returns:**

    [`neurde.data.Trajectories`][] with `ys` and `clean` of shape `(n_trajectories, n_times, 2)`,
    the last axis $[q, p]$.

    References: Greydanus, Dzamba, Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019
    (the ideal pendulum task).
    """
    fn = "pendulum"
    checked = _common(fn, n_trajectories, n_times, t1, radius, noise, dtype, key)
    n_trajectories, n_times, t1, radius, noise, dtype = checked
    params = tuple(
        _checks.positive(fn, name, value)
        for name, value in (("mass", mass), ("length", length), ("gravity", gravity))
    )
    return _sample(key, n_trajectories, n_times, t1, radius, params, noise, "pendulum", dtype)
