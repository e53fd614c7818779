"""Exact sample paths and moments of the Ornstein-Uhlenbeck process."""

import functools

import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

from .._validation import is_concrete as _is_concrete
from . import _checks
from .trajectories import Trajectories


def ou_mean(
    t: Real[ArrayLike, "..."],
    x0: Real[ArrayLike, "..."],
    theta: Real[ArrayLike, "..."],
    mu: Real[ArrayLike, "..."],
) -> Float[Array, "..."]:
    r"""Mean of the Ornstein-Uhlenbeck process started from a deterministic $x_0$.

    $$\mathbb{E}[X_t] = \mu + (x_0 - \mu) e^{-\theta t}.$$

    **Arguments:**

    - `t`: times (`t >= 0`).
    - `x0`: the initial value.
    - `theta`: the mean-reversion rate.
    - `mu`: the long-run mean.

    All arguments broadcast against each other.

    **Returns:**

    The mean at each time, with the broadcast shape.
    """
    t, x0, theta, mu = (jnp.asarray(a) for a in (t, x0, theta, mu))
    return mu + (x0 - mu) * jnp.exp(-theta * t)


def ou_variance(
    t: Real[ArrayLike, "..."], theta: Real[ArrayLike, "..."], sigma: Real[ArrayLike, "..."]
) -> Float[Array, "..."]:
    r"""Variance of the Ornstein-Uhlenbeck process started from a deterministic $x_0$.

    $$\operatorname{Var}[X_t] = \frac{\sigma^2}{2\theta}\left(1 - e^{-2\theta t}\right),$$

    per coordinate, tending to the stationary variance $\sigma^2 / (2\theta)$. Computed with
    `expm1`, so it is accurate for small $\theta t$ (where it is $\approx \sigma^2 t$).

    **Arguments:**

    - `t`: times (`t >= 0`).
    - `theta`: the mean-reversion rate, > 0.
    - `sigma`: the diffusion coefficient.

    All arguments broadcast against each other.

    **Returns:**

    The variance at each time, with the broadcast shape.
    """
    t, theta, sigma = (jnp.asarray(a) for a in (t, theta, sigma))
    if _is_concrete(theta) and not bool(jnp.all(theta > 0)):
        raise ValueError(
            f"`ou_variance`: `theta` (the mean-reversion rate) must be > 0, got {theta!r}. "
            "For theta -> 0 the process is a Brownian motion with variance sigma^2 t."
        )
    return sigma**2 * -jnp.expm1(-2 * theta * t) / (2 * theta)


def ornstein_uhlenbeck(
    n_paths: int = 256,
    n_times: int = 50,
    *,
    t1: float = 5.0,
    theta: float = 1.0,
    mu: float = 0.0,
    sigma: float = 0.5,
    x0: float | Float[ArrayLike, " dim"] = 1.0,
    dim: int = 1,
    dtype=None,
    key: PRNGKeyArray,
) -> Trajectories:
    r"""Exact sample paths of the Ornstein-Uhlenbeck process.

    $$dX_t = \theta(\mu - X_t)\,dt + \sigma\,dW_t, \qquad X_0 = x_0,$$

    with independent coordinates, sampled without discretization error on
    `ts = linspace(0, t1, n_times)` by the exact transition
    $$X_{t+\Delta} = \mu + (X_t - \mu)e^{-\theta\Delta}
    + \sigma\sqrt{\frac{1 - e^{-2\theta\Delta}}{2\theta}}\,\xi, \qquad \xi \sim N(0, I).$$
    Its moments are [`neurde.data.ou_mean`][] and [`neurde.data.ou_variance`][], and the
    covariance is $\operatorname{Cov}[X_s, X_t] = \operatorname{Var}[X_s] e^{-\theta(t - s)}$
    for $s \le t$.

    **Arguments:**

    - `n_paths`: number of sample paths, at least 1.
    - `n_times`: number of observation times, at least 2.
    - `t1`: final time, > 0.
    - `theta`: the mean-reversion rate, > 0.
    - `mu`: the long-run mean.
    - `sigma`: the diffusion coefficient, >= 0.
    - `x0`: the deterministic initial value, a number or an array of shape `(dim,)`.
    - `dim`: the dimension of the process, at least 1.
    - `dtype`: floating dtype of the paths;
      default `None`: JAX's default float (float64 with x64 on).
    - `key`: a JAX PRNG key.

    **Returns:**

    [`neurde.data.Trajectories`][] with the paths as `ys`, shape `(n_paths, n_times, dim)`, and
    `clean=None` (an SDE has no separate noise-free signal).

    References:
        Uhlenbeck, Ornstein. "On the theory of the Brownian motion". Physical Review 1930.
    """
    fn = "ornstein_uhlenbeck"
    n_paths = _checks.count(fn, "n_paths", n_paths, 1)
    n_times = _checks.count(fn, "n_times", n_times, 2)
    t1 = _checks.positive(fn, "t1", t1)
    theta = _checks.positive(fn, "theta", theta)
    mu = _checks.number(fn, "mu", mu)
    sigma = _checks.nonnegative(fn, "sigma", sigma)
    dim = _checks.count(fn, "dim", dim, 1)
    dtype = _checks.float_dtype(fn, dtype)
    _checks.prng_key(fn, key)
    start = jnp.asarray(x0, dtype)
    if start.shape not in ((), (dim,)):
        raise ValueError(
            f"`ornstein_uhlenbeck(..., x0=..., dim={dim})`: `x0` must be a number or have "
            f"shape ({dim},), got shape {start.shape}. Pass a scalar or one value per coordinate."
        )

    return _sample(key, n_paths, n_times, t1, theta, mu, sigma, start, dim, dtype)


@functools.partial(jax.jit, static_argnames=("n_paths", "n_times", "dim", "dtype"))
def _sample(key, n_paths, n_times, t1, theta, mu, sigma, start, dim, dtype):
    # One compilation per shape and dtype; the float parameters are traced.
    ts = jnp.linspace(0.0, t1, n_times, dtype=dtype)
    step = jnp.asarray(t1, dtype) / (n_times - 1)
    decay = jnp.exp(-theta * step)
    scale = sigma * jnp.sqrt(ou_variance(step, theta, 1.0))
    xi = jr.normal(key, (n_times - 1, n_paths, dim), dtype)

    def transition(x, z):
        x = mu + (x - mu) * decay + scale * z
        return x, x

    start = jnp.broadcast_to(start, (n_paths, dim))
    _, rest = lax.scan(transition, start, xi)
    ys = jnp.concatenate([start[None], rest]).transpose(1, 0, 2)
    return Trajectories(ts=ts, ys=ys)
