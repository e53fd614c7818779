"""Damped harmonic oscillators and damped pendulums."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray, Real

from . import _checks
from ._integrate import integrate
from .trajectories import Trajectories


def oscillator_field(
    t: Real[Array, ""] | float,
    y: Float[Array, " 2"],
    args: tuple[Real[Array, ""] | float, Real[Array, ""] | float, Bool[Array, ""] | bool],
) -> Float[Array, " 2"]:
    r"""Vector field of a damped harmonic oscillator or a damped pendulum.

    With state $y = (x, v)$, frequency $\omega$ and damping ratio $\zeta$,

    $$\frac{dx}{dt} = v, \qquad \frac{dv}{dt} = -2\zeta\omega v - \omega^2 g(x),$$

    where $g(x) = x$ (linear oscillator) or $g(x) = \sin x$ (pendulum).

    **Arguments:**

    - `t`: time (unused; the field is autonomous).
    - `y`: the state $(x, v)$, shape `(2,)`.
    - `args`: a tuple `(frequency, damping, nonlinear)`; `nonlinear` is a boolean (Python
      or JAX) selecting the pendulum.

    **Returns:**

    $dy/dt$, shape `(2,)`.
    """
    del t
    _checks.pairs("oscillator_field", "y", y)
    frequency, damping, nonlinear = args
    x, v = y[0], y[1]
    # `where` rather than `if`, so `nonlinear` may also be a traced boolean.
    restoring = jnp.where(nonlinear, jnp.sin(x), x)
    return jnp.stack([v, -2 * damping * frequency * v - frequency**2 * restoring])


def _linear_solution(
    ts: Float[Array, " times"],
    y0: Float[Array, "n 2"],
    frequency: Float[Array, ""],
    damping: Float[Array, ""],
    regime: str,
) -> Float[Array, "n times 2"]:
    # x(t) = x0 C(t) + (v0 + ζω x0) S(t),  v(t) = v0 C(t) - (ω² x0 + ζω v0) S(t), where
    # C = e^{-ζωt} cos(ω_d t), S = e^{-ζωt} sin(ω_d t) / ω_d, with cos/sin replaced by
    # cosh/sinh (over-damped) or by 1 and t (critically damped).
    t = ts[None, :]
    x0, v0 = y0[:, 0:1], y0[:, 1:2]
    decay = damping * frequency
    if regime == "under":
        omega = frequency * jnp.sqrt((1 - damping) * (1 + damping))
        envelope = jnp.exp(-decay * t)
        c = envelope * jnp.cos(omega * t)
        s = envelope * jnp.sin(omega * t) / omega
    elif regime == "critical":
        c = jnp.exp(-decay * t)
        s = c * t
    else:
        omega = frequency * jnp.sqrt((damping - 1) * (damping + 1))
        # e^{-ζωt} cosh/sinh written through the slow exponential and expm1: no overflow of
        # cosh at large t, no cancellation in sinh(ω_h t)/ω_h near critical damping.
        slow = jnp.exp((omega - decay) * t)
        c = slow * (1 + jnp.exp(-2 * omega * t)) / 2
        s = slow * -jnp.expm1(-2 * omega * t) / (2 * omega)
    x = x0 * c + (v0 + decay * x0) * s
    v = v0 * c - (frequency**2 * x0 + decay * v0) * s
    return jnp.stack([x, v], axis=-1)


@functools.partial(
    jax.jit, static_argnames=("n_trajectories", "n_times", "nonlinear", "regime", "dtype")
)
def _sample(key, n_trajectories, n_times, t1, frequency, damping, nonlinear, regime, noise, dtype):
    # One compilation per shape, dtype and regime; the float parameters are traced.
    init_key, noise_key = jr.split(key)
    ts = jnp.linspace(0.0, t1, n_times, dtype=dtype)
    y0 = jr.uniform(init_key, (n_trajectories, 2), dtype, -1.0, 1.0)
    frequency, damping = jnp.asarray(frequency, dtype), jnp.asarray(damping, dtype)
    if nonlinear:
        clean = integrate(oscillator_field, y0, ts, (frequency, damping, True))
    else:
        clean = _linear_solution(ts, y0, frequency, damping, regime)
    ys = clean + noise * jr.normal(noise_key, clean.shape, dtype)
    return Trajectories(ts=ts, ys=ys, clean=clean)


def oscillator(
    n_trajectories: int = 256,
    n_times: int = 50,
    *,
    t1: float = 10.0,
    frequency: float = 1.0,
    damping: float = 0.1,
    nonlinear: bool = False,
    noise: float = 0.0,
    dtype=None,
    key: PRNGKeyArray,
) -> Trajectories:
    r"""Trajectories of a damped harmonic oscillator, or of a damped pendulum.

    $$\ddot x + 2\zeta\omega\dot x + \omega^2 x = 0 \qquad\text{or}\qquad
    \ddot x + 2\zeta\omega\dot x + \omega^2 \sin x = 0,$$

    with state $(x, \dot x)$, $\omega$ = `frequency`, $\zeta$ = `damping` and initial states
    $(x_0, v_0) \sim U(-1, 1)^2$. The linear oscillator uses its exact solution (under-,
    critically and over-damped); the pendulum is integrated through
    [`neurde.data.oscillator_field`][] (Tsit5, PID controller at `rtol = atol = 1e-8` in
    `dtype`). Observations are `clean + noise * N(0, 1)` at `ts = linspace(0, t1, n_times)`.
    With the defaults the amplitude decays by $e^{-1} \approx 0.37$ over $t = 10$ during
    about 1.6 periods.

    **Arguments:**

    - `n_trajectories`: number of trajectories, at least 1.
    - `n_times`: number of observation times, at least 2.
    - `t1`: final time, > 0.
    - `frequency`: the undamped angular frequency $\omega$, > 0.
    - `damping`: the damping ratio $\zeta$, >= 0 (1 is critical damping).
    - `nonlinear`: if `True`, the pendulum ($\sin x$ restoring force).
    - `noise`: standard deviation of the additive Gaussian observation noise, >= 0.
    - `dtype`: floating dtype of the data;
      default `None`: JAX's default float (float64 with x64 on).
    - `key`: a JAX PRNG key.

    **Returns:**

    [`neurde.data.Trajectories`][] with `ys` and `clean` of shape `(n_trajectories, n_times, 2)`.
    """
    fn = "oscillator"
    n_trajectories = _checks.count(fn, "n_trajectories", n_trajectories, 1)
    n_times = _checks.count(fn, "n_times", n_times, 2)
    t1 = _checks.positive(fn, "t1", t1)
    frequency = _checks.positive(fn, "frequency", frequency)
    damping = _checks.nonnegative(fn, "damping", damping)
    if not isinstance(nonlinear, bool):
        raise TypeError(
            f"`oscillator(..., nonlinear={nonlinear!r})`: `nonlinear` must be a Python bool. "
            "Pass `nonlinear=True` for the pendulum or `False` for the linear oscillator."
        )
    noise = _checks.nonnegative(fn, "noise", noise)
    dtype = _checks.float_dtype(fn, dtype)
    _checks.prng_key(fn, key)

    # Classify after rounding to `dtype`: 1 - 1e-9 is critical damping in float32, and the
    # under-damped formula would divide by a zero frequency there.
    rounded = np.asarray(damping, dtype)
    regime = "under" if rounded < 1 else "critical" if rounded == 1 else "over"
    if nonlinear:
        regime = None  # unused; keeps one compilation for every pendulum damping
    return _sample(
        key, n_trajectories, n_times, t1, frequency, damping, nonlinear, regime, noise, dtype
    )
