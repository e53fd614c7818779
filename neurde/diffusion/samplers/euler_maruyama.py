r"""Euler–Maruyama on the reverse-time SDE."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._checks import check_schedule
from ..forward import AbstractForwardSDE
from ._fixed_grid import AbstractFixedGridSampler, BatchedScore, Keys
from .base import time_grid
from .grids import AbstractTimeGrid, to_time_grid


class EulerMaruyama(AbstractFixedGridSampler[Array]):
    r"""Euler–Maruyama on the reverse SDE $dx = [f(t)x - g(t)^2\nabla\log p_t(x)]\,dt + g\,d\bar W$.

    From $t$ to $s < t$, $\Delta = t - s$:
    $x_s = x_t - [f(t)x_t - g(t)^2 s_\theta(t, x_t)]\,\Delta + g(t)\sqrt{\Delta}\,z$
    (Song et al. 2021, eq. 6 and the "Euler–Maruyama" predictor of Appendix F; the drift is
    `neurde.diffusion.reverse_drift`). One score evaluation per step. With `denoise=True`
    the last step adds no noise (the reference implementation's `noise_removal`), which
    removes a noise of size $g\sqrt\Delta$ that the score at $t = \epsilon$ could no longer
    undo. Weak order 1. Works for every SDE.

    **Arguments:**

    - `steps`: number of steps $N$ (= NFE).
    - `eps`: the last time (default $10^{-3}$).
    - `time_grid`: `"uniform"` (default), `"logsnr"`, `"edm"` or a grid object.
    - `denoise`: drop the noise of the last step (default True).

    References: Song et al., ICLR 2021; Kloeden & Platen, "Numerical Solution of Stochastic
    Differential Equations", 1992.
    """

    steps: int = eqx.field(static=True, default=1000)
    eps: float = eqx.field(static=True, default=1e-3, kw_only=True)
    time_grid: AbstractTimeGrid = eqx.field(default="uniform", kw_only=True, converter=to_time_grid)
    denoise: bool = eqx.field(static=True, default=True, kw_only=True)

    def __check_init__(self):
        check_schedule("EulerMaruyama", self.steps, self.eps, self.time_grid)

    def nfe(self) -> int:
        return self.steps

    def randomness(self) -> str:
        return "the reverse SDE samples Brownian increments"

    def init(self, sde: AbstractForwardSDE, x_T: Array, keys: Keys) -> tuple[Array, Any]:
        ts = time_grid(sde, self.steps, self.time_grid, eps=self.eps, dtype=x_T.dtype)
        # 1 for the steps that add noise, 0 for the last one when `denoise`.
        n = self.steps
        noisy = jnp.arange(n) < n - 1 if self.denoise else jnp.ones(n, bool)
        return x_T, (ts[:-1], ts[1:], noisy.astype(x_T.dtype), keys)

    def step(self, score: BatchedScore, state: Array, inputs: Any) -> Array:
        t, s, noisy, key = inputs
        dt, x, g = t - s, state, score.sde.diffusion(t)
        z = jr.normal(key, x.shape, x.dtype)
        return x - score.reverse_drift(t, x) * dt + noisy * g * jnp.sqrt(dt) * z

    def finish(self, score: BatchedScore, state: Array, keys: Keys) -> Array:
        return state


__all__ = ["EulerMaruyama"]
