r"""Forward (noising) SDEs of score-based diffusion: VE, VP and sub-VP.

Every forward SDE here has a linear drift and a scalar diffusion,
$dx = f(t)\,x\,dt + g(t)\,dW$ on $t \in [0, T]$, $T = 1$, so its transition from the data is
Gaussian in closed form,

$$x_t = \alpha_t\,x_0 + \sigma_t\,z, \qquad z \sim \mathcal{N}(0, I),$$

with $\alpha_t$ = `mean_coeff(t)` and $\sigma_t$ = `std(t)`. These two functions are all that
DDIM, DPM-Solver and the EDM sampler need: the log signal-to-noise ratio
$\lambda_t = \log(\alpha_t / \sigma_t)$ (`log_snr`) is strictly decreasing, and its inverse
`time_from_log_snr` is in closed form for all three SDEs (Lu et al. 2022, Appendix D).

References: Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-Based Generative
Modeling through Stochastic Differential Equations", ICLR 2021 (eqs. 9, 11 and Appendix B);
Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver", NeurIPS 2022.
"""

import abc
import math
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import HORIZON, check_time

Time = Float[ArrayLike, ""]


class AbstractForwardSDE(eqx.Module):
    r"""A forward diffusion $dx = f(t)\,x\,dt + g(t)\,dW$ with Gaussian transitions.

    Subclasses give $f$ (`drift_coeff`), $g$ (`diffusion`), $\alpha_t$ (`mean_coeff`),
    $\sigma_t$ (`std`), the log-SNR and its inverse, and the prior. Time runs on $[0, T]$
    with $T = 1$.
    """

    T: ClassVar[float] = HORIZON

    @abc.abstractmethod
    def drift_coeff(self, t: Time) -> Array:
        """$f(t)$: the drift is $f(t)\\,x$."""

    @abc.abstractmethod
    def diffusion(self, t: Time) -> Array:
        """$g(t)$, the scalar diffusion coefficient."""

    @abc.abstractmethod
    def mean_coeff(self, t: Time) -> Array:
        r"""$\alpha_t$: $\mathbb{E}[x_t \mid x_0] = \alpha_t x_0$."""

    @abc.abstractmethod
    def std(self, t: Time) -> Array:
        r"""$\sigma_t$: the standard deviation of $x_t \mid x_0$."""

    @abc.abstractmethod
    def log_snr(self, t: Time) -> Array:
        r"""$\lambda_t = \log(\alpha_t / \sigma_t)$, strictly decreasing in $t$."""

    @abc.abstractmethod
    def time_from_log_snr(self, lam: Float[ArrayLike, "..."]) -> Array:
        r"""The inverse of `log_snr`: the time $t$ with $\lambda_t$ = `lam`."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior $\\mathcal{N}(0, s^2 I)$ that sampling starts from."""

    @abc.abstractmethod
    def likelihood_weight_integral(self, t: Time) -> Array:
        r"""An antiderivative $\Phi(t)$ of $g(t)^2 / \sigma_t^2$ (importance sampling of $t$)."""

    @abc.abstractmethod
    def likelihood_weight_integral_inverse(self, phi: Float[ArrayLike, "..."]) -> Array:
        r"""The inverse of `likelihood_weight_integral`."""

    def drift(self, t: Time, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The drift $f(t)\\,x$ at one state `x`."""
        return self.drift_coeff(t) * x

    def marginal(
        self, x0: Float[ArrayLike, "*shape"], t: Time
    ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        r"""Mean $\alpha_t x_0$ and standard deviation $\sigma_t$ of $x_t \mid x_0$.

        **Arguments:**

        - `x0`: one data point.
        - `t`: a time in $(0, 1]$.

        **Returns:**

        `(mean, std)`; sample with `mean + std * jr.normal(key, x0.shape)`.
        """
        t = check_time(type(self).__name__ + ".marginal", t)
        x0 = jnp.asarray(x0)
        return self.mean_coeff(t) * x0, self.std(t)

    def sample_prior(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype: Any = None) -> Array:
        r"""Draw from the prior $\mathcal{N}(0, s^2 I)$, $s$ = `prior_std`, of any shape."""
        shape = tuple(shape)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
            raise ValueError(
                f"{type(self).__name__}.sample_prior: `shape` must be a tuple of non-negative "
                f"integers, got {shape!r}."
            )
        if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{type(self).__name__}.sample_prior: `dtype` must be floating, got {dtype!r}."
            )
        return self.prior_std * jr.normal(key, shape, dtype=dtype)

    def prior_logp(self, x: Float[ArrayLike, "*shape"]) -> Float[Array, ""]:
        """Log-density of the prior at one point `x`, summed over all its entries."""
        x = jnp.asarray(x)
        s = self.prior_std
        return -0.5 * jnp.sum(x**2) / s**2 - x.size * (math.log(s) + 0.5 * math.log(2 * math.pi))


class VESDE(AbstractForwardSDE):
    r"""The variance-exploding SDE $dx = \sigma(t)\sqrt{2\log(\sigma_{\max}/\sigma_{\min})}\,dW$.

    With $\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t$, the transition is
    $x_t \mid x_0 \sim \mathcal{N}(x_0, [\sigma(t)^2 - \sigma(0)^2] I)$ (Song et al. 2021,
    eq. 30 and Appendix B): `mean_coeff` is 1 and `std(t)` is
    $\sigma_{\min}\sqrt{(\sigma_{\max}/\sigma_{\min})^{2t} - 1}$, *with* the $\sigma_{\min}^2$
    subtracted, so `std(0) = 0` and the closed forms are exact for the SDE. (The reference
    code drops the subtraction; the difference is below $\sigma_{\min}$.) The prior is
    $\mathcal{N}(0, \sigma_{\max}^2 I)$ as in the paper.

    **Arguments:**

    - `sigma_min`, `sigma_max`: the noise scales (defaults 0.01 and 50, Song et al.'s
      choice for CIFAR-10; pick `sigma_max` near the largest distance between data points).

    References: Song et al. 2021 (above); Song & Ermon, "Improved Techniques for Training
    Score-Based Generative Models", NeurIPS 2020 (the choice of `sigma_max`).
    """

    sigma_min: float
    sigma_max: float

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not (
            _is_number(sigma_min) and _is_number(sigma_max) and 0 < sigma_min < sigma_max < math.inf
        ):
            raise ValueError(
                "VESDE: `sigma_min` and `sigma_max` must satisfy 0 < sigma_min < sigma_max, got "
                f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}. Song et al. use "
                "sigma_min=0.01 and sigma_max about the largest distance between two data points."
            )
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def drift_coeff(self, t: Time) -> Array:
        return jnp.zeros_like(jnp.asarray(t))

    def diffusion(self, t: Time) -> Array:
        t = jnp.asarray(t)
        return self.sigma_min * jnp.exp(t * self._log_ratio) * math.sqrt(2 * self._log_ratio)

    def mean_coeff(self, t: Time) -> Array:
        return jnp.ones_like(jnp.asarray(t))

    def std(self, t: Time) -> Array:
        return self.sigma_min * jnp.sqrt(jnp.expm1(2 * self._log_ratio * jnp.asarray(t)))

    def log_snr(self, t: Time) -> Array:
        return -jnp.log(self.std(t))

    def time_from_log_snr(self, lam: Float[ArrayLike, "..."]) -> Array:
        lam = jnp.asarray(lam)
        return jnp.log1p(jnp.exp(-2 * lam) / self.sigma_min**2) / (2 * self._log_ratio)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def likelihood_weight_integral(self, t: Time) -> Array:
        # g^2 / sigma_t^2 = d/dt log(sigma_t^2), so Phi = log(expm1(2 t log r)).
        return jnp.log(jnp.expm1(2 * self._log_ratio * jnp.asarray(t)))

    def likelihood_weight_integral_inverse(self, phi: Float[ArrayLike, "..."]) -> Array:
        return jnp.log1p(jnp.exp(jnp.asarray(phi))) / (2 * self._log_ratio)


def _linear_beta_integral(beta_min: float, beta_max: float, t: Any) -> Array:
    t = jnp.asarray(t)
    return beta_min * t + 0.5 * (beta_max - beta_min) * t**2


def _linear_beta_time(beta_min: float, beta_max: float, integral: Any) -> Array:
    # Root of beta_min t + (beta_max - beta_min) t^2 / 2 = B, in the cancellation-free form
    # 2B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B)) (Lu et al. 2022, App. D).
    integral = jnp.asarray(integral)
    root = jnp.sqrt(beta_min**2 + 2 * (beta_max - beta_min) * integral)
    return 2 * integral / (beta_min + root)


def _is_number(x: Any) -> bool:
    """A real number (Python or NumPy scalar, or a 0-d concrete array), not a bool."""
    if isinstance(x, bool):
        return False
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def _linear_betas(owner: str, beta_min: float, beta_max: float) -> tuple[float, float]:
    if not (_is_number(beta_min) and _is_number(beta_max) and 0 < beta_min < beta_max < math.inf):
        raise ValueError(
            f"{owner}: `beta_min` and `beta_max` must satisfy 0 < beta_min < beta_max, got "
            f"beta_min={beta_min!r}, beta_max={beta_max!r}. The usual values are 0.1 and 20."
        )
    return float(beta_min), float(beta_max)


class AbstractLinearBetaSDE(AbstractForwardSDE):
    r"""Shared by VP and sub-VP: the linear schedule $\beta(t) = \beta_{min} + t(\beta_{max} -
    \beta_{min})$, drift $-\tfrac12\beta(t)\,x$ and mean coefficient $e^{-B(t)/2}$."""

    beta_min: eqx.AbstractVar[float]
    beta_max: eqx.AbstractVar[float]

    def beta(self, t: Time) -> Array:
        r"""$\beta(t)$."""
        return self.beta_min + jnp.asarray(t) * (self.beta_max - self.beta_min)

    def beta_integral(self, t: Time) -> Array:
        r"""$B(t) = \int_0^t \beta(s)\,ds$."""
        return _linear_beta_integral(self.beta_min, self.beta_max, t)

    def drift_coeff(self, t: Time) -> Array:
        return -0.5 * self.beta(t)

    def mean_coeff(self, t: Time) -> Array:
        return jnp.exp(-0.5 * self.beta_integral(t))


class VPSDE(AbstractLinearBetaSDE):
    r"""The variance-preserving SDE $dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW$.

    $\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})$ is the continuous limit of
    DDPM's linear schedule (`neurde.diffusion.ddpm_schedule`). With
    $B(t) = \int_0^t \beta = \beta_{\min} t + \tfrac12(\beta_{\max}-\beta_{\min})t^2$:
    $\alpha_t = e^{-B/2}$, $\sigma_t = \sqrt{1 - e^{-B}}$ (Song et al. 2021, eq. 11 and
    eq. 33), $\lambda_t = -\tfrac12\log(e^{B} - 1)$, and the inverse
    $B = \log(1 + e^{-2\lambda})$, $t = 2B / (\beta_{\min} + \sqrt{\beta_{\min}^2 +
    2(\beta_{\max}-\beta_{\min})B})$ (Lu et al. 2022, Appendix D). The prior is
    $\mathcal{N}(0, I)$.

    **Arguments:**

    - `beta_min`, `beta_max`: the schedule's ends (defaults 0.1 and 20: DDPM's
      $\beta_1 = 10^{-4}$, $\beta_{1000} = 0.02$ times $N = 1000$).

    References: Song et al. 2021; Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic
    Models", NeurIPS 2020.
    """

    beta_min: float
    beta_max: float

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = _linear_betas(type(self).__name__, beta_min, beta_max)

    def diffusion(self, t: Time) -> Array:
        return jnp.sqrt(self.beta(t))

    def std(self, t: Time) -> Array:
        return jnp.sqrt(-jnp.expm1(-self.beta_integral(t)))

    def log_snr(self, t: Time) -> Array:
        return -0.5 * jnp.log(jnp.expm1(self.beta_integral(t)))

    def time_from_log_snr(self, lam: Float[ArrayLike, "..."]) -> Array:
        integral = jnp.logaddexp(0.0, -2 * jnp.asarray(lam))
        return _linear_beta_time(self.beta_min, self.beta_max, integral)

    @property
    def prior_std(self) -> float:
        return 1.0

    def likelihood_weight_integral(self, t: Time) -> Array:
        # beta / (1 - e^{-B}) = d/dt log(e^B - 1).
        return jnp.log(jnp.expm1(self.beta_integral(t)))

    def likelihood_weight_integral_inverse(self, phi: Float[ArrayLike, "..."]) -> Array:
        integral = jnp.logaddexp(0.0, jnp.asarray(phi))
        return _linear_beta_time(self.beta_min, self.beta_max, integral)


class SubVPSDE(AbstractLinearBetaSDE):
    r"""The sub-VP SDE $dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)(1 - e^{-2B(t)})}\,dW$.

    Same $\beta(t)$ and $B(t)$ as `VPSDE`; its variance stays below the VP one (Song et al.
    2021, eq. 12): $\alpha_t = e^{-B/2}$, $\sigma_t = 1 - e^{-B}$ (a standard deviation, not a
    variance; eq. 34). $\lambda_t = -B/2 - \log(1 - e^{-B})$; its inverse solves
    $e^{\lambda}u^2 + u - e^{\lambda} = 0$ for $u = e^{-B/2}$. The prior is $\mathcal{N}(0, I)$.

    **Arguments:**

    - `beta_min`, `beta_max`: as for `VPSDE`.

    References: Song et al. 2021.
    """

    beta_min: float
    beta_max: float

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = _linear_betas(type(self).__name__, beta_min, beta_max)

    def diffusion(self, t: Time) -> Array:
        return jnp.sqrt(-self.beta(t) * jnp.expm1(-2 * self.beta_integral(t)))

    def std(self, t: Time) -> Array:
        return -jnp.expm1(-self.beta_integral(t))

    def log_snr(self, t: Time) -> Array:
        integral = self.beta_integral(t)
        return -0.5 * integral - jnp.log(-jnp.expm1(-integral))

    def time_from_log_snr(self, lam: Float[ArrayLike, "..."]) -> Array:
        e = jnp.exp(jnp.asarray(lam))
        u = 2 * e / (1 + jnp.sqrt(1 + 4 * e**2))
        return _linear_beta_time(self.beta_min, self.beta_max, -2 * jnp.log(u))

    @property
    def prior_std(self) -> float:
        return 1.0

    def likelihood_weight_integral(self, t: Time) -> Array:
        # beta (1 + e^{-B}) / (1 - e^{-B}) = d/dt [B + 2 log(1 - e^{-B})].
        integral = self.beta_integral(t)
        return integral + 2 * jnp.log(-jnp.expm1(-integral))

    def likelihood_weight_integral_inverse(self, phi: Float[ArrayLike, "..."]) -> Array:
        # With w = e^{-B}: (1 - w)^2 / w = e^phi, so B = log1p((E + sqrt(E (E + 4))) / 2).
        e = jnp.exp(jnp.asarray(phi))
        integral = jnp.log1p(0.5 * (e + jnp.sqrt(e * (e + 4))))
        return _linear_beta_time(self.beta_min, self.beta_max, integral)


__all__ = ["VESDE", "VPSDE", "AbstractForwardSDE", "SubVPSDE"]
