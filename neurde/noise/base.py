r"""The two kinds of regularizer that `neurde.noise` composes.

- An `AbstractNoise` is a Gaussian noise injection: a diagonal diffusion $g(t, y, f)$ read
  off the time, the state and the drift's value. Added to a continuous model it turns
  $dy = f\,dt$ into $dy = f\,dt + \operatorname{diag}(g)\,dW$; on a discrete (Euler) net it adds
  $\sqrt{h}\, g \odot \xi$, $\xi \sim N(0, I)$, to each block: one Euler–Maruyama step.
- An `AbstractBranchRegularizer` is a random multiplier of a residual branch (dropout,
  stochastic depth, Shake-Shake, ShakeDrop). It has a discrete form (the random draw of the
  original paper), an SDE form (the drift and diffusion with the same one-step mean and
  covariance) and an inference form (the expected branch).
"""

import abc
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray


class AbstractNoise(eqx.Module):
    """A diagonal diffusion $g(t, y, f)$; subclasses define `scale`.

    `needs_drift` says whether `scale` reads the drift value `f`; when no noise does, a
    continuous model does not evaluate its field a second time for the diffusion.
    """

    needs_drift: ClassVar[bool] = False

    @abc.abstractmethod
    def scale(self, t: Array, y: Array, f: Array) -> Array:
        """The diffusion's diagonal at time `t`, state `y`, drift value `f` (shape of `y`)."""


def check_sigma(owner: str, sigma: Any) -> float:
    """A noise level: a finite number >= 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, int | float):
        raise TypeError(
            f"{owner}: `sigma` must be a Python number (the noise level), got "
            f"{type(sigma).__name__}. Pass e.g. sigma=0.1; use `schedule` for time dependence."
        )
    if not sigma >= 0 or sigma == float("inf"):
        raise ValueError(
            f"{owner}: `sigma` must be a finite number >= 0, got {sigma!r}. It is the "
            "diffusion's scale; sigma=0 switches the noise off."
        )
    return float(sigma)


class AbstractScaledNoise(AbstractNoise):
    r"""A noise with a level $\sigma \ge 0$ and an optional time factor $s(t)$.

    **Arguments:**

    - `sigma`: the noise level, >= 0.
    - `schedule`: optional factor $s(t)$ (a function of time returning a scalar); constant 1
      when left out.
    """

    sigma: float = eqx.field(static=True)
    schedule: Callable[[Any], Any] | None = eqx.field(static=True)

    def __init__(self, sigma: float, schedule: Callable[[Any], Any] | None = None):
        owner = type(self).__name__
        self.sigma = check_sigma(owner, sigma)
        check_schedule(owner, schedule)
        self.schedule = schedule

    def level(self, t: Array, dtype: Any) -> Array:
        r"""$\sigma\,s(t)$, a scalar of `dtype`."""
        return scheduled(self.sigma, self.schedule, t, dtype)


def check_noises(owner: str, noises: Any) -> tuple["AbstractNoise", ...]:
    """Raise `TypeError` unless every element is an `AbstractNoise`; return them as a tuple."""
    for noise in noises:
        if not isinstance(noise, AbstractNoise):
            raise TypeError(
                f"{owner}: noises must be neurde.noise.AbstractNoise objects (Additive, "
                f"Multiplicative, DropoutDiffusion), got {type(noise).__name__}."
            )
    return tuple(noises)


def check_probability(owner: str, name: str, p: Any, meaning: str) -> float:
    """A probability strictly inside (0, 1)."""
    if isinstance(p, bool) or not isinstance(p, int | float):
        raise TypeError(f"{owner}: `{name}` must be a number in (0, 1), got {type(p).__name__}.")
    if not 0 < p < 1:
        raise ValueError(
            f"{owner}: `{name}` must lie strictly between 0 and 1 ({meaning}), got {p!r}."
        )
    return float(p)


def check_schedule(owner: str, schedule: Any) -> None:
    if schedule is not None and not callable(schedule):
        raise TypeError(
            f"{owner}: `schedule` must be a function of time t returning a scalar factor "
            f"(e.g. `lambda t: jnp.exp(-t)`), got {type(schedule).__name__}."
        )


def scheduled(sigma: float, schedule: Any, t: Array, dtype: Any) -> Array:
    """`sigma * schedule(t)`, checked to be a scalar."""
    if schedule is None:
        return jnp.asarray(sigma, dtype)
    factor = jnp.asarray(schedule(t), dtype)
    if factor.shape != ():
        raise ValueError(
            f"noise schedule: `schedule(t)` must return a scalar, got shape {factor.shape}."
        )
    return sigma * factor


def _safe_sqrt(x: Array) -> Array:
    # sqrt with a zero (not infinite) derivative at 0, so gradients stay finite when every
    # noise vanishes at some point (multiplicative noise at y = 0, dropout noise at f = 0).
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def combined_scale(
    noises: tuple[AbstractNoise, ...], t: Array, y: Array, f: Any, extra: tuple[Array, ...] = ()
) -> Array:
    r"""One diagonal diffusion with the summed covariance: $g = \sqrt{\sum_i g_i^2}$.

    For diagonal noises this is the same SDE in law as independent Brownian motions
    $\sum_i \operatorname{diag}(g_i)\,dW^i$: the Itô generator depends only on
    $G G^\top = \operatorname{diag}(\sum_i g_i^2)$, and the Stratonovich correction
    $\tfrac12 g_j \partial_j g_j = \tfrac14 \partial_j (g_j^2)$ is linear in $g_j^2$ too.
    One Brownian motion of dimension d instead of k of them keeps the solve as cheap as a
    single noise (sampling the Brownian motion dominates the cost of an SDE step).
    """
    scales = [*extra, *(noise.scale(t, y, f) for noise in noises)]
    if len(scales) == 1:
        return scales[0]
    total = scales[0] ** 2
    for s in scales[1:]:
        total = total + s**2
    return _safe_sqrt(total)


class AbstractBranchRegularizer(eqx.Module):
    r"""A random multiplier $m$ of the residual branch: $x_{n+1} = x_n + h\,m \odot f_n(x_n)$.

    Subclasses give the discrete draw (`sample`), the expected branch (`mean`, used at
    inference and as the SDE's drift) and the branch's standard deviation (`std`), so that
    the SDE form $x_{n+1} = x_n + h\,\text{mean} + \sqrt{h}\,\sqrt{h}\,\text{std}\,\xi$ has
    the discrete step's mean and covariance.
    """

    branches: ClassVar[int] = 1
    noise: ClassVar[Literal["diagonal", "scalar"]] = "scalar"

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        """The randomly scaled branch of block `n` (discrete form)."""

    @abc.abstractmethod
    def mean(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        """The branch's expectation: the inference output and the SDE's drift."""

    @abc.abstractmethod
    def std(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        """The branch's standard deviation (per coordinate; one shared draw for scalar noise)."""


def linear_survival(n: Array, depth: int, p_last: float) -> Array:
    r"""Huang et al.'s linear decay $p_l = 1 - \frac{l}{L}(1 - p_L)$ for block $l = n + 1$."""
    return 1.0 - (n + 1) / depth * (1.0 - p_last)


def straight_through(forward: Array, backward: Array) -> Array:
    """A value equal to `forward` whose gradient is that of `backward`."""
    return backward + jax.lax.stop_gradient(forward - backward)
