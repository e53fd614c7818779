r"""The EDM sampler of Karras et al. 2022: Heun's method in $\tilde\sigma$, optional churn."""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._checks import check_eps, check_in_range, check_positive, check_steps
from ..forward import AbstractForwardSDE
from ._fixed_grid import AbstractFixedGridSampler, BatchedScore, Keys


def _direction(score: BatchedScore, y: Array, sigma: Array) -> Array:
    # dy/dsigma = -sigma grad_y log p(y; sigma) = eps_hat(t, alpha_t y), with t = t(sigma).
    t = score.sde.time_from_log_snr(-jnp.log(sigma))
    return score.noise(t, score.sde.mean_coeff(t) * y)


def _churn(y: Array, noise: Array, key: Any) -> Array:
    """`y` plus `noise` times a standard normal draw; `y` itself when deterministic."""
    return y if key is None else y + noise * jr.normal(key, y.shape, y.dtype)


def _heun(score: BatchedScore, y: Array, sigma: Array, sigma_next: Array) -> Array:
    """One Heun step of the EDM ODE from `sigma` to `sigma_next` > 0 (two evaluations)."""
    d = _direction(score, y, sigma)
    y_euler = y + (sigma_next - sigma) * d
    d_next = _direction(score, y_euler, sigma_next)
    return y + (sigma_next - sigma) * 0.5 * (d + d_next)


def _karras_sigmas(hi: Array, lo: Array, points: int, rho: float) -> Array:
    """`points` levels from `hi` down to `lo`, uniform in sigma^(1/rho) (eq. 5)."""
    hi_r, lo_r = hi ** (1 / rho), lo ** (1 / rho)
    frac = jnp.arange(points, dtype=hi.dtype) / max(points - 1, 1)
    return (hi_r + (lo_r - hi_r) * frac) ** rho


class EDMHeun(AbstractFixedGridSampler[Array]):
    r"""Karras et al. 2022, Algorithms 1 (deterministic) and 2 (stochastic, "churn").

    Any of the SDEs here is, in the scaled variable $y = x/\alpha_t$ and the noise level
    $\tilde\sigma = \sigma_t/\alpha_t = e^{-\lambda_t}$, the EDM ODE
    $dy/d\tilde\sigma = -\tilde\sigma\nabla_y\log p(y;\tilde\sigma) = \hat\epsilon(t, \alpha_t y)$
    (their eq. 4 with $s(t) = \alpha_t$, $\sigma(t) = \tilde\sigma$), with
    $t = t(\lambda = -\log\tilde\sigma)$ in closed form. The noise levels are
    $\tilde\sigma_i = (\tilde\sigma_{\max}^{1/\rho} + \frac{i}{N-1}(\tilde\sigma_{\min}^{1/\rho}
    - \tilde\sigma_{\max}^{1/\rho}))^\rho$, $i < N$, from $\tilde\sigma(T)$ to
    $\tilde\sigma(\epsilon)$, and $\tilde\sigma_N = 0$ (eq. 5). Each step is Heun's method
    except the last, an Euler step to $\tilde\sigma = 0$ (the denoiser), so the samples are at
    $t = 0$ and NFE = $2N - 1$. Second order.

    With `churn` $= S_\text{churn} > 0$, each step with $\tilde\sigma_i \in [S_{t\min},
    S_{t\max}]$ first raises the noise to $\hat\sigma = \tilde\sigma_i(1 + \gamma)$,
    $\gamma = \min(S_\text{churn}/N, \sqrt2 - 1)$, adding
    $\sqrt{\hat\sigma^2 - \tilde\sigma_i^2}\,S_\text{noise}\,z$ (Algorithm 2). Deviation:
    $\hat\sigma$ is capped at $\tilde\sigma(T)$ so the score is never queried after $T$.
    An empty churn range ($S_{t\min} > S_{t\max}$) is an error. Works for every SDE.

    **Arguments:**

    - `steps`: $N \ge 1$.
    - `rho`: $\rho$ (default 7).
    - `churn`, `s_tmin`, `s_tmax`, `s_noise`: Algorithm 2's $S_\text{churn}$ (default 0,
      deterministic), $S_{t\min}$, $S_{t\max}$, $S_\text{noise}$.
    - `eps`: sets $\tilde\sigma_{\min} = \tilde\sigma(\epsilon)$ (default $10^{-3}$).

    References: Karras, Aittala, Aila, Laine, "Elucidating the Design Space of
    Diffusion-Based Generative Models", NeurIPS 2022.
    """

    steps: int = eqx.field(static=True, default=18)
    rho: float = eqx.field(static=True, default=7.0, kw_only=True)
    churn: float = eqx.field(static=True, default=0.0, kw_only=True)
    s_tmin: float = eqx.field(static=True, default=0.0, kw_only=True)
    s_tmax: float = eqx.field(static=True, default=math.inf, kw_only=True)
    s_noise: float = eqx.field(static=True, default=1.0, kw_only=True)
    eps: float = eqx.field(static=True, default=1e-3, kw_only=True)

    def __check_init__(self):
        owner = "EDMHeun"
        check_steps(owner, self.steps)
        check_eps(owner, self.eps)
        check_positive(owner, "rho", self.rho)
        check_positive(owner, "s_noise", self.s_noise)
        check_in_range(
            owner, "churn", self.churn, 0, fix="0 is the deterministic sampler (Algorithm 1)."
        )
        fix = "They bound the noise levels where churn applies; 0 and inf (defaults) churn all."
        check_in_range(owner, "s_tmin", self.s_tmin, 0, fix=fix)
        check_in_range(owner, "s_tmax", self.s_tmax, 0, fix=fix)
        if self.s_tmin > self.s_tmax:
            raise ValueError(
                f"EDMHeun: `s_tmin` must be <= `s_tmax`, got s_tmin={self.s_tmin!r} > "
                f"s_tmax={self.s_tmax!r}: no noise level lies in [s_tmin, s_tmax], so churn "
                "would never apply. Swap them (Karras et al. use s_tmin=0.05, s_tmax=50)."
            )

    def sigmas(self, sde: AbstractForwardSDE, dtype: Any = None) -> Array:
        r"""The noise levels $\tilde\sigma_0 > \dots > \tilde\sigma_{N-1} > \tilde\sigma_N = 0$."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        hi = jnp.exp(-sde.log_snr(jnp.asarray(sde.T, dtype)))
        lo = jnp.exp(-sde.log_snr(jnp.asarray(self.eps, dtype)))
        sigmas = _karras_sigmas(hi, lo, self.steps, self.rho)
        return jnp.append(sigmas, jnp.zeros((), dtype))

    def _raised(self, sigmas: Array) -> tuple[Array, Array]:
        # Algorithm 2's churn of each step i < N: the raised level, and the standard deviation
        # of the noise that raises it (0 where the churn is off).
        sigma = sigmas[:-1]
        gamma = min(self.churn / self.steps, math.sqrt(2) - 1)
        inside = (sigma >= self.s_tmin) & (sigma <= self.s_tmax)
        # gamma_i, capped so that the raised level stays <= sigmas[0].
        gamma_i = jnp.where(inside, gamma, 0.0)
        gamma_i = jnp.clip(jnp.minimum(gamma_i, sigmas[0] / sigma - 1), 0.0)
        # sqrt(raised^2 - sigma^2) = sigma sqrt(gamma_i (2 + gamma_i)): exactly 0 where churn is
        # off. (As a difference of squares, XLA's FMA contraction left sqrt(ulp(sigma^2)) of
        # noise there: 0.04 at sigma = 152 in float32.)
        noise = sigma * jnp.sqrt(gamma_i * (2 + gamma_i)) * self.s_noise
        return sigma * (1 + gamma_i), noise

    def nfe(self) -> int:
        return 2 * self.steps - 1

    def randomness(self) -> str | None:
        return f"churn={self.churn} > 0 adds noise" if self.churn > 0 else None

    def init(self, sde: AbstractForwardSDE, x_T: Array, keys: Keys) -> tuple[Array, Any]:
        sigmas = self.sigmas(sde, x_T.dtype)
        y = x_T / sde.mean_coeff(jnp.asarray(sde.T, x_T.dtype))
        # The last step, an Euler step to sigma = 0, is `finish`'s.
        inputs = (*self._raised(sigmas), sigmas[1:], keys)
        return y, jax.tree.map(lambda a: a[:-1], inputs)

    def step(self, score: BatchedScore, state: Array, inputs: Any) -> Array:
        sigma, noise, sigma_next, key = inputs
        return _heun(score, _churn(state, noise, key), sigma, sigma_next)

    def finish(self, score: BatchedScore, state: Array, keys: Keys) -> Array:
        raised, noise = self._raised(self.sigmas(score.sde, state.dtype))
        y = _churn(state, noise[-1], None if keys is None else keys[-1])
        return y - raised[-1] * _direction(score, y, raised[-1])


__all__ = ["EDMHeun"]
