"""Spirals that turn clockwise or anticlockwise, irregularly sampled with observations dropped.

The toy problem of the neural CDE paper's code (torchcde's `time_series_classification`
example), made irregular: the label is the turning direction.
"""

import functools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from . import _checks
from .classification import Classification


def spiral_directions(
    n_train: int = 256,
    n_test: int = 256,
    *,
    length: int = 100,
    drop: float = 0.3,
    noise: float = 0.01,
    key: PRNGKeyArray,
) -> Classification:
    r"""2-D spirals labelled by turning direction (0: anticlockwise, 1: clockwise).

    Example $k$ observes $p(t) = \frac{1}{1 + t/2}(\cos(\theta_k + \sigma_k t),
    \sin(\theta_k + \sigma_k t)) + \text{noise}\cdot\varepsilon$ with a random phase
    $\theta_k \sim U(0, 2\pi)$ and direction $\sigma_k = \pm 1$ (equally likely), at its own
    `length` irregular times from $0$ to $4\pi$: the even grid with each interior time moved by
    a uniform draw of up to 40% of the spacing (series are sampled at different times, but
    no two times nearly coincide: noisy observations a tiny time apart would give the
    backward-difference slopes of a Hermite path huge values). Each observation but the
    first is then dropped with probability `drop`: its position becomes NaN while its time
    stays, the layout `neurde.continuous.control_path` reads (a union grid with NaN where a
    series has no value).

    **Arguments:**

    - `n_train`, `n_test`: number of training and test series, at least 1.
    - `length`: observation times per series (before dropping), at least 3.
    - `drop`: the probability that an observation is dropped, in [0, 1).
    - `noise`: standard deviation of the Gaussian observation noise, >= 0.
    - `key`: a JAX PRNG key.

    **Returns:**

    A `neurde.data.Classification` (`name="spiral_directions"`, 2 classes) whose inputs have
    shape `(n, length, 3)`: channel 0 the time (always present), channels 1-2 the position
    (NaN where dropped). For a CDE: `control_path(x[:, 0], x[:, 1:])` per series.

    References: Kidger, Morrill, Foster, Lyons, "Neural Controlled Differential Equations for
    Irregular Time Series", NeurIPS 2020; torchcde, `example/time_series_classification.py`.
    """
    fn = "spiral_directions"
    n_train = _checks.count(fn, "n_train", n_train, 1)
    n_test = _checks.count(fn, "n_test", n_test, 1)
    length = _checks.count(fn, "length", length, 3)
    drop = _checks.number(fn, "drop", drop)
    if not 0 <= drop < 1:
        raise ValueError(
            f"`{fn}(..., drop={drop!r})`: `drop` must lie in [0, 1), the probability that an "
            "observation is dropped. Pass e.g. `drop=0.3`; `0` keeps every observation."
        )
    noise = _checks.nonnegative(fn, "noise", noise)
    _checks.prng_key(fn, key)
    train_key, test_key = jr.split(key)
    x_train, y_train = _draw(train_key, n_train, length, drop, noise)
    x_test, y_test = _draw(test_key, n_test, length, drop, noise)
    return Classification(x_train, y_train, x_test, y_test, num_classes=2, name=fn)


@functools.partial(jax.jit, static_argnames=("n", "length"))
def _draw(
    key: PRNGKeyArray, n: int, length: int, drop: float, noise: float
) -> tuple[Float[Array, "n length 3"], Int[Array, " n"]]:
    tkey, pkey, dkey, nkey, mkey = jr.split(key, 5)
    end = 4 * math.pi
    jitter = jr.uniform(tkey, (n, length), minval=-0.4, maxval=0.4).at[:, [0, -1]].set(0.0)
    times = end * (jnp.arange(length) + jitter) / (length - 1)
    labels = jr.bernoulli(dkey, 0.5, (n,)).astype(jnp.int32)
    direction = jnp.where(labels == 1, -1.0, 1.0)[:, None]
    angle = jr.uniform(pkey, (n, 1), maxval=2 * math.pi) + direction * times
    radius = 1 / (1 + 0.5 * times)
    position = jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)
    position = position + noise * jr.normal(nkey, position.shape)
    kept = jr.bernoulli(mkey, 1 - drop, (n, length)).at[:, 0].set(True)
    position = jnp.where(kept[..., None], position, jnp.nan)
    return jnp.concatenate([times[..., None], position], axis=-1), labels
