"""The Lotka-Volterra predator-prey model and its conserved quantity."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

from . import _checks
from ._integrate import integrate
from .trajectories import Trajectories

_RealScalar = Real[ArrayLike, ""]


def lotka_volterra_field(
    t: Real[Array, ""] | float,
    y: Float[Array, " 2"],
    args: tuple[_RealScalar, _RealScalar, _RealScalar, _RealScalar],
) -> Float[Array, " 2"]:
    r"""Vector field of the Lotka-Volterra predator-prey model.

    $$\frac{dx}{dt} = \alpha x - \beta x y, \qquad \frac{dy}{dt} = \delta x y - \gamma y,$$

    with prey $x$ and predators $y$.

    **Arguments:**

    - `t`: time (unused; the field is autonomous).
    - `y`: the state $(x, y)$, shape `(2,)`.
    - `args`: a tuple `(alpha, beta, gamma, delta)`.

    **Returns:**

    The time derivative, shape `(2,)`.

    References:
        Lotka. "Elements of Physical Biology". 1925.
        Volterra. "Fluctuations in the abundance of a species considered mathematically".
        Nature 1926.
    """
    del t
    _checks.pairs("lotka_volterra_field", "y", y)
    alpha, beta, gamma, delta = args
    prey, predator = y[0], y[1]
    return jnp.stack(
        [alpha * prey - beta * prey * predator, delta * prey * predator - gamma * predator]
    )


def lotka_volterra_invariant(
    y: Float[ArrayLike, "*batch 2"],
    alpha: _RealScalar,
    beta: _RealScalar,
    gamma: _RealScalar,
    delta: _RealScalar,
) -> Float[Array, "*batch"]:
    r"""The quantity conserved along every Lotka-Volterra trajectory.

    $$V(x, y) = \delta x - \gamma \ln x + \beta y - \alpha \ln y,$$

    constant in time because
    $\dot V = (\delta - \gamma / x)\dot x + (\beta - \alpha / y)\dot y = 0$.
    Defined for positive populations; its minimum is at the equilibrium
    $(\gamma / \delta, \alpha / \beta)$.

    **Arguments:**

    - `y`: states $(x, y)$ with any leading batch shape, shape `(..., 2)`.
    - `alpha`, `beta`, `gamma`, `delta`: the model parameters.

    **Returns:**

    $V$ for every state, shape `(...)`.
    """
    y, alpha, beta, gamma, delta = (jnp.asarray(a) for a in (y, alpha, beta, gamma, delta))
    prey, predator = y[..., 0], y[..., 1]
    return delta * prey - gamma * jnp.log(prey) + beta * predator - alpha * jnp.log(predator)


def lotka_volterra(
    n_trajectories: int = 256,
    n_times: int = 50,
    *,
    t1: float = 15.0,
    alpha: float = 1.5,
    beta: float = 1.0,
    gamma: float = 3.0,
    delta: float = 1.0,
    noise: float = 0.0,
    dtype=None,
    key: PRNGKeyArray,
) -> Trajectories:
    r"""Trajectories of the Lotka-Volterra predator-prey model.

    Initial populations are $(x_0, y_0) \sim U(0.5, 2)^2$, integrated through
    [`neurde.data.lotka_volterra_field`][] (Tsit5, PID controller at `rtol = atol = 1e-8` in
    `dtype`) and observed as `clean + noise * N(0, 1)` at `ts = linspace(0, t1, n_times)`.
    Every orbit is closed around the equilibrium $(\gamma/\delta, \alpha/\beta) = (3, 1.5)$
    (with the defaults) and conserves [`neurde.data.lotka_volterra_invariant`][]; over the
    default `t1 = 15` a trajectory makes four to five cycles, with populations between about
    0.05 and 10. Additive noise can make observed populations negative.

    **Arguments:**

    - `n_trajectories`: number of trajectories, at least 1.
    - `n_times`: number of observation times, at least 2.
    - `t1`: final time, > 0.
    - `alpha`, `beta`, `gamma`, `delta`: positive model parameters.
    - `noise`: standard deviation of the additive Gaussian observation noise, >= 0.
    - `dtype`: floating dtype of the data and of the integration;
      default `None`: JAX's default float (float64 with x64 on).
    - `key`: a JAX PRNG key.

    **Returns:**

    [`neurde.data.Trajectories`][] with `ys` and `clean` of shape `(n_trajectories, n_times, 2)`,
    prey first.
    """
    fn = "lotka_volterra"
    n_trajectories = _checks.count(fn, "n_trajectories", n_trajectories, 1)
    n_times = _checks.count(fn, "n_times", n_times, 2)
    t1 = _checks.positive(fn, "t1", t1)
    params = tuple(
        _checks.positive(fn, name, value)
        for name, value in [("alpha", alpha), ("beta", beta), ("gamma", gamma), ("delta", delta)]
    )
    noise = _checks.nonnegative(fn, "noise", noise)
    dtype = _checks.float_dtype(fn, dtype)
    _checks.prng_key(fn, key)

    return _sample(key, n_trajectories, n_times, t1, params, noise, dtype)


@functools.partial(jax.jit, static_argnames=("n_trajectories", "n_times", "dtype"))
def _sample(key, n_trajectories, n_times, t1, params, noise, dtype):
    # One compilation per shape and dtype; the float parameters are traced.
    init_key, noise_key = jr.split(key)
    ts = jnp.linspace(0.0, t1, n_times, dtype=dtype)
    y0 = jr.uniform(init_key, (n_trajectories, 2), dtype, 0.5, 2.0)
    args = tuple(jnp.asarray(p, dtype) for p in params)
    clean = integrate(lotka_volterra_field, y0, ts, args)
    ys = clean + noise * jr.normal(noise_key, clean.shape, dtype)
    return Trajectories(ts=ts, ys=ys, clean=clean)
