r"""The EDM sampler of Karras et al. 2022: Heun's method in $\tilde\sigma$, optional churn."""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from ..._types import Args
from ..forward import AbstractForwardSDE
from ..score import ScoreFn
from .base import (
    AbstractSampler,
    BatchedFn,
    bind_args,
    check_sampling_eps,
    check_steps,
    require_key,
)


def _direction(sde: AbstractForwardSDE, score: BatchedFn, y: Array, sigma: Array) -> Array:
    # dy/dsigma = -sigma grad_y log p(y; sigma) = eps_hat(t, alpha_t y), with t = t(sigma).
    t = sde.time_from_log_snr(-jnp.log(sigma))
    alpha = sde.mean_coeff(t)
    return -sde.std(t) * score(t, alpha * y)


class EDMHeun(AbstractSampler):
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
    Works for every SDE.

    **Arguments:**

    - `steps`: $N \ge 1$.
    - `rho`: $\rho$ (default 7).
    - `churn`, `s_tmin`, `s_tmax`, `s_noise`: Algorithm 2's $S_\text{churn}$ (default 0,
      deterministic), $S_{t\min}$, $S_{t\max}$, $S_\text{noise}$.
    - `eps`: sets $\tilde\sigma_{\min} = \tilde\sigma(\epsilon)$ (default $10^{-3}$).

    References: Karras, Aittala, Aila, Laine, "Elucidating the Design Space of
    Diffusion-Based Generative Models", NeurIPS 2022.
    """

    steps: int = eqx.field(static=True)
    rho: float = eqx.field(static=True)
    churn: float = eqx.field(static=True)
    s_tmin: float = eqx.field(static=True)
    s_tmax: float = eqx.field(static=True)
    s_noise: float = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(
        self,
        steps: int = 18,
        *,
        rho: float = 7.0,
        churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
        eps: float = 1e-3,
    ):
        owner = "EDMHeun"
        self.steps = check_steps(owner, steps)
        for name, value in (("rho", rho), ("s_noise", s_noise)):
            if not value > 0:
                raise ValueError(f"{owner}: `{name}` must be > 0, got {value!r}.")
        if not churn >= 0:
            raise ValueError(
                f"{owner}: `churn` must be >= 0, got {churn!r}; 0 is the deterministic "
                "sampler (Algorithm 1)."
            )
        self.rho, self.churn, self.s_noise = float(rho), float(churn), float(s_noise)
        self.s_tmin, self.s_tmax = float(s_tmin), float(s_tmax)
        self.eps = check_sampling_eps(owner, eps)

    def sigmas(self, sde: AbstractForwardSDE, dtype: Any = None) -> Array:
        r"""The noise levels $\tilde\sigma_0 > \dots > \tilde\sigma_{N-1} > \tilde\sigma_N = 0$."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        hi = jnp.exp(-sde.log_snr(jnp.asarray(sde.T, dtype)) / self.rho)
        lo = jnp.exp(-sde.log_snr(jnp.asarray(self.eps, dtype)) / self.rho)
        frac = jnp.arange(self.steps, dtype=dtype) / max(self.steps - 1, 1)
        return jnp.append((hi + (lo - hi) * frac) ** self.rho, jnp.zeros((), dtype))

    def run(
        self,
        score_fn: ScoreFn,
        sde: AbstractForwardSDE,
        x_T: Array,
        args: Args,
        key: PRNGKeyArray | None,
    ) -> tuple[Array, Array]:
        score = bind_args(score_fn, args)
        dtype = x_T.dtype
        sigmas = self.sigmas(sde, dtype)
        stochastic = self.churn > 0
        if stochastic:
            key = require_key("EDMHeun", key, f"churn={self.churn} > 0 adds noise")
            keys = jr.split(key, self.steps)
        else:
            keys = jnp.zeros((self.steps,), dtype)
        gamma = min(self.churn / self.steps, math.sqrt(2) - 1)
        y = x_T / sde.mean_coeff(jnp.asarray(sde.T, dtype))

        def churn(y: Array, sigma: Array, k: Any) -> tuple[Array, Array]:
            inside = (sigma >= self.s_tmin) & (sigma <= self.s_tmax)
            raised = jnp.minimum(sigma * (1 + jnp.where(inside, gamma, 0.0)), sigmas[0])
            z = jr.normal(k, y.shape, dtype)
            # max(., 0): XLA may contract raised^2 - sigma^2 into an FMA that rounds an exact
            # 0 (no churn, or the cap at sigmas[0]) to a tiny negative number.
            extra = jnp.sqrt(jnp.maximum(raised**2 - sigma**2, 0.0))
            return y + extra * self.s_noise * z, raised

        def heun(y: Array, inputs: Any) -> tuple[Array, None]:
            sigma, sigma_next, k = inputs
            if stochastic:
                y, sigma = churn(y, sigma, k)
            d = _direction(sde, score, y, sigma)
            y_euler = y + (sigma_next - sigma) * d
            d_next = _direction(sde, score, y_euler, sigma_next)
            return y + (sigma_next - sigma) * 0.5 * (d + d_next), None

        xs = (sigmas[:-2], sigmas[1:-1], keys[:-1])
        y, _ = jax.lax.scan(heun, y, xs)
        sigma = sigmas[-2]
        if stochastic:
            y, sigma = churn(y, sigma, keys[-1])
        y = y - sigma * _direction(sde, score, y, sigma)
        return y, jnp.asarray(2 * self.steps - 1)


__all__ = ["EDMHeun"]
