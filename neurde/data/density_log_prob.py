r"""Exact log-densities of the 2-D toy densities, and their cross-entropy $E_p[-\log p(x)]$.

The reference a density model is measured against: a model's test negative log-likelihood
is at least the data's own cross-entropy (its differential entropy), with equality only for
the true density.

- `eight_gaussians` is a mixture of 8 equal isotropic Gaussians: closed form.
- `two_moons` is a point uniform on one of two half circles plus Gaussian noise: its density
  is the Gaussian kernel averaged over the arc parameter, a 1-D integral computed here by
  composite Gauss-Legendre quadrature.
- `checkerboard` is uniform on 8 squares of side 2: $1/32$ on them, 0 elsewhere.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks
from .densities import DENSITIES

# Both moons of `two_moons` are scaled by 2 and shifted by this vector.
_MOONS_SCALE = 2.0
_MOONS_SHIFT = (-1.0, -0.2)


def _gaussian_log_kernel(x: Array, centres: Array, std: Array | float) -> Array:
    """log N(x; c, std^2 I) for every centre c (last axis), for one 2-D point x."""
    # Scaled before squaring and with log(std) rather than log(std**2): a tiny `std` (whose
    # square underflows to 0) gives -inf, not NaN.
    sq = jnp.sum(jnp.square((x[..., None, :] - centres) / std), axis=-1)
    return -0.5 * sq - jnp.log(2 * jnp.pi) - 2 * jnp.log(std)


def eight_gaussians_log_prob(x: Float[Array, "... 2"], *, std: float = 0.5) -> Float[Array, "..."]:
    r"""The exact log-density of `neurde.data.eight_gaussians` (same `std`).

    $p(x) = \tfrac18\sum_{k=0}^{7}\mathcal N(x;\, c_k/1.414,\, (\sigma/1.414)^2 I)$ with
    $c_k = 4(\cos k\pi/4, \sin k\pi/4)$.

    **Arguments:**

    - `x`: points, shape `(..., 2)`.
    - `std`: the component standard deviation before the division by 1.414 (default 0.5).

    **Returns:**

    $\log p(x)$, shape `(...)`.
    """
    _checks.pairs("eight_gaussians_log_prob", "x", x)
    _checks.positive_scale("eight_gaussians_log_prob", "std", std, jnp.result_type(x, float))
    angles = jnp.arange(8) * (math.pi / 4)
    centres = 4.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1) / 1.414
    log_k = _gaussian_log_kernel(
        jnp.asarray(x), centres.astype(jnp.result_type(x, float)), std / 1.414
    )
    return jax.nn.logsumexp(log_k, axis=-1) - jnp.log(8.0)


def _gauss_legendre(panels: int, order: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of composite Gauss-Legendre quadrature on [0, pi]."""
    nodes, weights = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(0.0, math.pi, panels + 1)
    half = np.diff(edges) / 2
    mids = (edges[:-1] + edges[1:]) / 2
    return (mids[:, None] + half[:, None] * nodes).ravel(), (half[:, None] * weights).ravel()


def two_moons_log_prob(
    x: Float[Array, "... 2"], *, noise: float = 0.1, panels: int = 128
) -> Float[Array, "..."]:
    r"""The log-density of `neurde.data.two_moons` (same `noise`), by quadrature.

    A point is $2(a(\theta) + \sigma\xi) + b$ with $\theta \sim U[0, \pi]$, an arc chosen
    with probability 1/2, $a(\theta) = (\cos\theta, \sin\theta)$ or
    $(1 - \cos\theta, \tfrac12 - \sin\theta)$, $\xi \sim \mathcal N(0, I)$ and
    $b = (-1, -0.2)$, so

    $$p(x) = \frac{1}{2\pi}\sum_{\text{arcs}}\int_0^\pi
      \mathcal N\big(x;\, 2a(\theta) + b,\, (2\sigma)^2 I\big)\,d\theta,$$

    computed with `panels` panels of 8-point Gauss-Legendre quadrature in log space. The
    kernel's width in $\theta$ is about $\sigma$ (0.1 rad) near the arcs, and the default
    128 panels (width 0.025 rad) integrate it to float precision.

    **Arguments:**

    - `x`: points, shape `(..., 2)`.
    - `noise`: the noise standard deviation of `two_moons` (default 0.1).
    - `panels`: the number of quadrature panels on $[0, \pi]$.

    **Returns:**

    $\log p(x)$, shape `(...)`.
    """
    x = jnp.asarray(x)
    _checks.pairs("two_moons_log_prob", "x", x)
    _checks.positive_scale("two_moons_log_prob", "noise", noise, jnp.result_type(x, float))
    if isinstance(panels, bool) or not isinstance(panels, int) or panels < 1:
        raise ValueError(f"`two_moons_log_prob`: `panels` must be an integer >= 1, got {panels!r}.")
    dtype = jnp.result_type(x, float)
    theta_np, w_np = _gauss_legendre(panels)
    theta, log_w = jnp.asarray(theta_np, dtype), jnp.log(jnp.asarray(w_np, dtype))
    c, s = jnp.cos(theta), jnp.sin(theta)
    upper = jnp.stack([c, s], -1)
    lower = jnp.stack([1.0 - c, 0.5 - s], -1)
    shift = jnp.asarray(_MOONS_SHIFT, dtype)
    centres = _MOONS_SCALE * jnp.concatenate([upper, lower]) + shift
    log_k = _gaussian_log_kernel(x, centres, _MOONS_SCALE * noise)
    log_w2 = jnp.concatenate([log_w, log_w])
    return jax.nn.logsumexp(log_k + log_w2, axis=-1) - jnp.log(2 * jnp.pi)


def checkerboard_log_prob(x: Float[Array, "... 2"]) -> Float[Array, "..."]:
    r"""The exact log-density of `neurde.data.checkerboard`: $\log(1/32)$ on the 8 squares
    (side 2, in $[-4, 4]^2$, where $\lfloor x_1/2\rfloor + \lfloor x_2/2\rfloor$ is even),
    $-\infty$ elsewhere.

    **Arguments:**

    - `x`: points, shape `(..., 2)`.

    **Returns:**

    $\log p(x)$, shape `(...)`.
    """
    x = jnp.asarray(x)
    _checks.pairs("checkerboard_log_prob", "x", x)
    cells = jnp.floor(x / 2.0)
    inside = jnp.all((x >= -4.0) & (x < 4.0), axis=-1)
    black = jnp.sum(cells, axis=-1) % 2 == 0
    dtype = jnp.result_type(x, float)
    return jnp.where(inside & black, -jnp.log(jnp.asarray(32.0, dtype)), -jnp.inf)


DENSITY_LOG_PROBS: dict[str, Callable[..., Array]] = {
    "two-moons": two_moons_log_prob,
    "checkerboard": checkerboard_log_prob,
    "8-gaussians": eight_gaussians_log_prob,
}


def data_cross_entropy(name: str, *, n: int = 100_000, key: PRNGKeyArray) -> tuple[float, float]:
    r"""The true data's cross-entropy $E_p[-\log p(x)]$ (its differential entropy), by Monte
    Carlo over `n` samples of the density `name` (a key of `neurde.data.DENSITIES`).

    The floor of a model's test negative log-likelihood on that density.

    **Arguments:**

    - `name`: `"two-moons"`, `"checkerboard"` or `"8-gaussians"`.
    - `n`: the number of Monte Carlo samples.
    - `key`: draws the samples.

    **Returns:**

    `(mean, standard_error)` of $-\log p(x)$ in nats.
    """
    if name not in DENSITY_LOG_PROBS:
        raise ValueError(
            f"data_cross_entropy: unknown density {name!r}. Choose one of "
            f"{sorted(DENSITY_LOG_PROBS)}."
        )
    x = DENSITIES[name](n, key=key)
    log_p = jax.jit(DENSITY_LOG_PROBS[name])
    # In chunks: the two-moons quadrature holds (points x nodes) kernel values.
    nll = -np.concatenate([np.asarray(log_p(x[i : i + 4096])) for i in range(0, n, 4096)])
    return float(nll.mean()), float(nll.std() / math.sqrt(n))


__all__ = [
    "DENSITY_LOG_PROBS",
    "checkerboard_log_prob",
    "data_cross_entropy",
    "eight_gaussians_log_prob",
    "two_moons_log_prob",
]
