r"""Euler–Maruyama on the reverse-time SDE."""

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


def noise_switch(steps: int, denoise: bool, dtype: Any) -> Array:
    """1 for the steps that add noise, 0 for the last one when `denoise`."""
    on = jnp.arange(steps) < steps - 1 if denoise else jnp.ones(steps, bool)
    return on.astype(dtype)


def reverse_step(
    sde: AbstractForwardSDE, score: Any, x: Array, t: Array, s: Array, on: Array, key: Any
) -> Array:
    r"""One Euler–Maruyama step of the reverse SDE from $t$ down to $s < t$:
    $x - [f(t)x - g(t)^2 \nabla\log p_t(x)](t - s) + g(t)\sqrt{t - s}\,z$ (noise times `on`)."""
    dt = t - s
    g = sde.diffusion(t)
    drift = sde.drift_coeff(t) * x - g**2 * score(t, x)
    z = jr.normal(key, x.shape, x.dtype)
    return x - drift * dt + on * g * jnp.sqrt(dt) * z


class EulerMaruyama(AbstractSampler):
    r"""Euler–Maruyama on the reverse SDE $dx = [f(t)x - g(t)^2\nabla\log p_t(x)]\,dt + g\,d\bar W$.

    From $t$ to $s < t$, $\Delta = t - s$:
    $x_s = x_t - [f(t)x_t - g(t)^2 s_\theta(t, x_t)]\,\Delta + g(t)\sqrt{\Delta}\,z$
    (Song et al. 2021, eq. 6 and the "Euler–Maruyama" predictor of Appendix F). One score
    evaluation per step. With `denoise=True` the last step adds no noise (the reference
    implementation's `noise_removal`), which removes a noise of size $g\sqrt\Delta$ that the
    score at $t = \epsilon$ could no longer undo. Weak order 1. Works for every SDE.

    **Arguments:**

    - `steps`: number of steps $N$ (= NFE).
    - `eps`: the last time (default $10^{-3}$).
    - `time_grid`: `"uniform"` (default), `"logsnr"` or `"edm"`.
    - `denoise`: drop the noise of the last step (default True).

    References: Song et al., ICLR 2021; Kloeden & Platen, "Numerical Solution of Stochastic
    Differential Equations", 1992.
    """

    steps: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    time_grid: TimeGrid = eqx.field(static=True)
    denoise: bool = eqx.field(static=True)

    def __init__(
        self,
        steps: int = 1000,
        *,
        eps: float = 1e-3,
        time_grid: TimeGrid = "uniform",
        denoise: bool = True,
    ):
        self.steps = check_steps("EulerMaruyama", steps)
        self.eps = check_sampling_eps("EulerMaruyama", eps)
        check_time_grid("EulerMaruyama", time_grid)
        self.time_grid = time_grid
        self.denoise = denoise

    def run(
        self,
        score_fn: ScoreFn,
        sde: AbstractForwardSDE,
        x_T: Array,
        args: Args,
        key: PRNGKeyArray | None,
    ) -> tuple[Array, Array]:
        key = require_key("EulerMaruyama", key, "the reverse SDE samples Brownian increments")
        score = bind_args(score_fn, args)
        ts = time_grid(sde, self.steps, self.time_grid, eps=self.eps, dtype=x_T.dtype)

        def step(x: Array, inputs: Any) -> tuple[Array, None]:
            t, s, on, k = inputs
            return reverse_step(sde, score, x, t, s, on, k), None

        xs = (ts[:-1], ts[1:], noise_switch(self.steps, self.denoise, x_T.dtype),
              jr.split(key, self.steps))  # fmt: skip
        x, _ = jax.lax.scan(step, x_T, xs)
        return x, jnp.asarray(self.steps)


__all__ = ["EulerMaruyama"]
