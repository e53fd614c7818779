"""Irregularly sampled periodic series: the toy data set of the latent ODE paper."""

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from ..continuous.ode_rnn import IrregularSeries
from . import _checks
from .trajectories import Trajectories


def periodic(
    n: int,
    *,
    times: int = 100,
    t1: float = 5.0,
    keep_prob: float = 0.3,
    noise_std: float = 0.01,
    frequency: tuple[float, float] = (0.5, 1.0),
    amplitude: tuple[float, float] = (0.5, 1.5),
    key: PRNGKeyArray,
) -> Trajectories:
    r"""Sinusoids $a \sin(2\pi \nu t + \phi)$ observed at random times, with noise.

    Frequency $\nu$, amplitude $a$ and phase $\phi$ are drawn per series, uniformly from the
    given ranges (phase from $[0, 2\pi)$). As in Rubanova et al.'s toy experiments, one grid
    of `times` points is drawn uniformly on $[0, t_1]$ (with $t = 0$ included) and each
    series observes each point with probability `keep_prob` (the first point always), so
    the series are irregular and unaligned but share a union grid; pass the result to
    `irregular_series` for the models of `neurde.continuous`.

    **Arguments:**

    - `n`: the number of series.
    - `times`: the size of the shared grid.
    - `t1`: the end of the time interval.
    - `keep_prob`: the probability that a series observes a grid point, in (0, 1].
    - `noise_std`: the standard deviation of the Gaussian observation noise.
    - `frequency`, `amplitude`: `(low, high)` ranges.
    - `key`: a JAX PRNG key.

    **Returns:**

    `Trajectories` with `ts` `(times,)`, `ys` and `clean` `(n, times, 1)`, `mask`
    `(n, times)`.

    References: Rubanova, Chen, Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series",
    NeurIPS 2019, Section 4.1.
    """
    fn = "periodic"
    n = _checks.count(fn, "n", n, 1)
    times = _checks.count(fn, "times", times, 2)
    t1 = _checks.positive(fn, "t1", t1)
    noise_std = _checks.nonnegative(fn, "noise_std", noise_std)
    keep_prob = _checks.number(fn, "keep_prob", keep_prob)
    if not 0 < keep_prob <= 1:
        raise ValueError(f"`{fn}(..., keep_prob={keep_prob!r})`: must lie in (0, 1], e.g. 0.3.")
    for name, (low, high) in (("frequency", frequency), ("amplitude", amplitude)):
        if not 0 < low <= high:
            raise ValueError(
                f"`{fn}(..., {name}={(low, high)!r})`: must be (low, high) with 0 < low <= high."
            )
    _checks.prng_key(fn, key)
    tkey, fkey, akey, pkey, nkey, mkey = jr.split(key, 6)
    grid = jnp.sort(jr.uniform(tkey, (times - 1,), minval=0.0, maxval=t1))
    ts = jnp.concatenate([jnp.zeros(1), grid])
    nu = jr.uniform(fkey, (n, 1), minval=frequency[0], maxval=frequency[1])
    a = jr.uniform(akey, (n, 1), minval=amplitude[0], maxval=amplitude[1])
    phi = jr.uniform(pkey, (n, 1), maxval=2 * jnp.pi)
    clean = (a * jnp.sin(2 * jnp.pi * nu * ts + phi))[..., None]
    ys = clean + noise_std * jr.normal(nkey, clean.shape)
    mask = jr.bernoulli(mkey, keep_prob, (n, times)).at[:, 0].set(True)
    return Trajectories(ts=ts, ys=ys, clean=clean, mask=mask)


def irregular_series(traj: Trajectories) -> IrregularSeries:
    """A batch of `neurde.continuous.IrregularSeries` from `Trajectories` on a shared grid.

    Each series keeps the shared times with its own mask (all ones where `traj.mask` is
    `None`), broadcast over the data dimension; vmap a model over the result.

    **Arguments:**

    - `traj`: the trajectories, `ys` of shape `(n, times, dim)`.

    **Returns:**

    An `IrregularSeries` with leaves of shapes `(n, times)`, `(n, times, dim)`,
    `(n, times, dim)`.
    """
    if not isinstance(traj, Trajectories):
        raise TypeError(
            f"`irregular_series(traj=...)`: `traj` must be a `neurde.data.Trajectories`, got "
            f"{type(traj).__name__}."
        )
    n = traj.ys.shape[0]
    mask = jnp.ones(traj.ys.shape[:2], bool) if traj.mask is None else traj.mask
    mask = jnp.broadcast_to(mask[..., None], traj.ys.shape)
    times = jnp.broadcast_to(traj.ts, (n, traj.ts.shape[0]))
    return jax.vmap(IrregularSeries)(times, traj.ys, mask)
