r"""DDIM: denoising diffusion implicit models, the eta family."""

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
    TimeGrid,
    bind_args,
    check_sampling_eps,
    check_steps,
    check_time_grid,
    require_key,
    time_grid,
)


class DDIM(AbstractSampler):
    r"""DDIM sampling (Song, Meng, Ermon 2021, eq. 12), for any $(\alpha_t, \sigma_t)$.

    From $t$ to $s < t$, with $\hat\epsilon = -\sigma_t s_\theta(t, x_t)$ and the predicted
    data $\hat x_0 = (x_t - \sigma_t\hat\epsilon)/\alpha_t$:

    $$x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - c^2}\;\hat\epsilon + c\,z, \qquad
      c = \eta\,\sigma_s\sqrt{1 - \frac{\alpha_t^2\sigma_s^2}{\alpha_s^2\sigma_t^2}}.$$

    For VP ($\alpha^2 = \bar\alpha$, $\sigma^2 = 1 - \bar\alpha$) $c$ is the paper's
    $\sigma_t(\eta) = \eta\sqrt{(1-\bar\alpha_{s})/(1-\bar\alpha_t)}\sqrt{1-\bar\alpha_t/
    \bar\alpha_s}$; in general $c^2/\eta^2$ is the variance of the Gaussian posterior
    $q(x_s \mid x_t, x_0)$, so $\eta = 1$ is ancestral sampling and $\eta = 0$ is
    deterministic: the first-order exponential integrator of the probability-flow ODE,
    i.e. DPM-Solver-1 (Lu et al. 2022, Sec. 4.1). One score evaluation per step. Works for
    every SDE.

    **Arguments:**

    - `steps`: number of steps (= NFE).
    - `eta`: $\eta \in [0, 1]$ (default 0, deterministic).
    - `eps`: the last time (default $10^{-3}$).
    - `time_grid`: `"uniform"` (default, DDIM's "linear" skip), `"logsnr"` or `"edm"`.

    References: Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
    """

    steps: int = eqx.field(static=True)
    eta: float = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    time_grid: TimeGrid = eqx.field(static=True)

    def __init__(
        self,
        steps: int = 50,
        *,
        eta: float = 0.0,
        eps: float = 1e-3,
        time_grid: TimeGrid = "uniform",
    ):
        self.steps = check_steps("DDIM", steps)
        if not 0 <= eta <= 1:
            raise ValueError(
                f"DDIM: `eta` must lie in [0, 1], got {eta!r}. eta=0 is deterministic DDIM, "
                "eta=1 ancestral sampling."
            )
        self.eta = float(eta)
        self.eps = check_sampling_eps("DDIM", eps)
        check_time_grid("DDIM", time_grid)
        self.time_grid = time_grid

    def run(
        self,
        score_fn: ScoreFn,
        sde: AbstractForwardSDE,
        x_T: Array,
        args: Args,
        key: PRNGKeyArray | None,
    ) -> tuple[Array, Array]:
        stochastic = self.eta > 0
        if stochastic:
            key = require_key("DDIM", key, f"eta={self.eta} > 0 adds noise")
            keys = jr.split(key, self.steps)
        else:
            keys = jnp.zeros((self.steps,), x_T.dtype)
        score = bind_args(score_fn, args)
        ts = time_grid(sde, self.steps, self.time_grid, eps=self.eps, dtype=x_T.dtype)

        def step(x: Array, inputs: Any) -> tuple[Array, None]:
            t, s, k = inputs
            alpha_t, sigma_t = sde.mean_coeff(t), sde.std(t)
            alpha_s, sigma_s = sde.mean_coeff(s), sde.std(s)
            noise = -sigma_t * score(t, x)
            x0 = (x - sigma_t * noise) / alpha_t
            if not stochastic:
                return alpha_s * x0 + sigma_s * noise, None
            ratio = (alpha_t * sigma_s / (alpha_s * sigma_t)) ** 2
            c = self.eta * sigma_s * jnp.sqrt(1 - ratio)
            direction = jnp.sqrt(sigma_s**2 - c**2)
            z = jr.normal(k, x.shape, x.dtype)
            return alpha_s * x0 + direction * noise + c * z, None

        x, _ = jax.lax.scan(step, x_T, (ts[:-1], ts[1:], keys))
        return x, jnp.asarray(self.steps)


__all__ = ["DDIM"]
