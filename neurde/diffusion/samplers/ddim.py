r"""DDIM: denoising diffusion implicit models, the eta family."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._checks import check_in_range, check_schedule
from ..forward import AbstractForwardSDE
from ._fixed_grid import AbstractFixedGridSampler, BatchedScore, Keys
from .base import time_grid
from .grids import AbstractTimeGrid, to_time_grid


class DDIM(AbstractFixedGridSampler[Array]):
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
    - `time_grid`: `"uniform"` (default, DDIM's "linear" skip), `"logsnr"`, `"edm"` or a
      grid object (`KarrasGrid(rho)`, a fitted `OptimizedGrid`).

    References: Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
    """

    steps: int = eqx.field(static=True, default=50)
    eta: float = eqx.field(static=True, default=0.0, kw_only=True)
    eps: float = eqx.field(static=True, default=1e-3, kw_only=True)
    time_grid: AbstractTimeGrid = eqx.field(default="uniform", kw_only=True, converter=to_time_grid)

    def __check_init__(self):
        check_schedule("DDIM", self.steps, self.eps, self.time_grid)
        fix = "eta=0 is deterministic DDIM, eta=1 ancestral sampling."
        check_in_range("DDIM", "eta", self.eta, 0, 1, fix)

    def nfe(self) -> int:
        return self.steps

    def randomness(self) -> str | None:
        return f"eta={self.eta} > 0 adds noise" if self.eta > 0 else None

    def init(self, sde: AbstractForwardSDE, x_T: Array, keys: Keys) -> tuple[Array, Any]:
        ts = time_grid(sde, self.steps, self.time_grid, eps=self.eps, dtype=x_T.dtype)
        return x_T, (ts[:-1], ts[1:], keys)

    def step(self, score: BatchedScore, state: Array, inputs: Any) -> Array:
        t, s, key = inputs
        sde, x = score.sde, state
        alpha_t, sigma_t = sde.mean_coeff(t), sde.std(t)
        alpha_s, sigma_s = sde.mean_coeff(s), sde.std(s)
        noise = score.noise(t, x)
        x0 = (x - sigma_t * noise) / alpha_t
        if key is None:
            return alpha_s * x0 + sigma_s * noise
        ratio = (alpha_t * sigma_s / (alpha_s * sigma_t)) ** 2
        c = self.eta * sigma_s * jnp.sqrt(1 - ratio)
        direction = jnp.sqrt(sigma_s**2 - c**2)
        z = jr.normal(key, x.shape, x.dtype)
        return alpha_s * x0 + direction * noise + c * z

    def finish(self, score: BatchedScore, state: Array, keys: Keys) -> Array:
        return state


__all__ = ["DDIM"]
