"""Two-dimensional toy densities of the score-based and flow literature.

`two_moons`, `checkerboard` and `eight_gaussians` follow the toy data of FFJORD
(Grathwohl et al. 2019, `lib/toy_data.py`), the common benchmark for 2-D generative models:
each returns `n` points of shape `(n, 2)`, roughly centred with coordinates within about
[-4, 4], drawn with an explicit `key`.
"""

import math

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks


def _check_n(owner: str, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{owner}: `n` must be an integer >= 1 (number of points), got {n!r}.")


def _check_scale(owner: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(
            f"{owner}: `{name}` must be a finite number >= 0 (a standard deviation), got {value!r}."
        )


def two_moons(n: int, *, noise: float = 0.1, key: PRNGKeyArray) -> Float[Array, "n 2"]:
    """Two interleaved half circles with Gaussian noise `noise`, scaled by 2 and shifted."""
    _check_n("two_moons", n)
    _checks.prng_key("two_moons", key)
    _check_scale("two_moons", "noise", noise)
    k1, k2, k3 = jr.split(key, 3)
    theta = jr.uniform(k1, (n,), minval=0.0, maxval=math.pi)
    upper = jr.bernoulli(k2, 0.5, (n,))
    x = jnp.where(upper, jnp.cos(theta), 1.0 - jnp.cos(theta))
    y = jnp.where(upper, jnp.sin(theta), 0.5 - jnp.sin(theta))
    points = jnp.stack([x, y], -1) + noise * jr.normal(k3, (n, 2))
    return points * 2.0 + jnp.array([-1.0, -0.2])


def checkerboard(n: int, *, key: PRNGKeyArray) -> Float[Array, "n 2"]:
    """Uniform on the black squares of a 4 x 4 checkerboard on [-4, 4]^2."""
    _check_n("checkerboard", n)
    _checks.prng_key("checkerboard", key)
    k1, k2, k3 = jr.split(key, 3)
    x1 = jr.uniform(k1, (n,)) * 4 - 2
    x2 = jr.uniform(k2, (n,)) - 2.0 * jr.randint(k3, (n,), 0, 2)
    x2 = x2 + jnp.floor(x1) % 2
    return jnp.stack([x1, x2], -1) * 2


def eight_gaussians(n: int, *, std: float = 0.5, key: PRNGKeyArray) -> Float[Array, "n 2"]:
    """A mixture of 8 equal Gaussians (standard deviation `std` before scaling) on a circle of
    radius 4, all divided by 1.414, as in FFJORD."""
    _check_n("eight_gaussians", n)
    _checks.prng_key("eight_gaussians", key)
    _check_scale("eight_gaussians", "std", std)
    k1, k2 = jr.split(key)
    angles = jnp.arange(8) * (math.pi / 4)
    centres = 4.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
    idx = jr.randint(k1, (n,), 0, 8)
    return (centres[idx] + std * jr.normal(k2, (n, 2))) / 1.414


DENSITIES = {"two-moons": two_moons, "checkerboard": checkerboard, "8-gaussians": eight_gaussians}
