r"""Predictor–corrector sampling: reverse-SDE steps interleaved with Langevin MCMC."""

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
    TimeGrid,
    bind_args,
    check_sampling_eps,
    check_steps,
    check_time_grid,
    require_key,
    time_grid,
)
from .euler_maruyama import noise_switch, reverse_step


def _mean_norm(x: Array) -> Array:
    return jnp.mean(jnp.sqrt(jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)))


class PredictorCorrector(AbstractSampler):
    r"""Predictor–corrector sampling (Song et al. 2021, Algorithms 4 and 5).

    Each of the $N$ steps runs `corrector_steps` = $M$ steps of Langevin dynamics at the
    current time $t$,

    $$x \leftarrow x + \epsilon\,s_\theta(t, x) + \sqrt{2\epsilon}\,z, \qquad
      \epsilon = 2\,a_t\,\big(r\,\|z\| / \|s_\theta(t, x)\|\big)^2,$$

    (the signal-to-noise rule, $r$ = `snr`; $a_t =
    \alpha_t^2/\alpha_s^2$ with $s$ the next time, which is DDPM's $\alpha_i = 1-\beta_i$ for
    VP/sub-VP and 1 for VE), then one Euler–Maruyama predictor step of the reverse SDE from
    $t$ to the next time. This is the reference code's order (corrector, then predictor); the
    paper's algorithms start with the predictor instead, the same sequence shifted by half a
    step. The last predictor step adds no noise (`denoise`). NFE = $N(M + 1)$. Works for
    every SDE.

    The norms are averaged over the batch, as in the reference code (the paper's
    algorithms write them for one sample). Per-example norms would make the step unbounded
    in low dimension, where $\|s_\theta\|$ is often near 0; the price is that a sample
    depends on the rest of its batch through the step size.

    **Arguments:**

    - `steps`: number of predictor steps $N$.
    - `corrector_steps`: $M \ge 1$ Langevin steps per predictor step (default 1).
    - `snr`: $r$ (default 0.16, Song et al.'s value for CIFAR-10 VE models).
    - `eps`: the last time (default $10^{-3}$).
    - `time_grid`: `"uniform"` (default), `"logsnr"` or `"edm"`.
    - `denoise`: drop the noise of the last predictor step (default True).

    References: Song et al., ICLR 2021, Sec. 4.2 and Appendix G.
    """

    steps: int = eqx.field(static=True)
    corrector_steps: int = eqx.field(static=True)
    snr: float = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    time_grid: TimeGrid = eqx.field(static=True)
    denoise: bool = eqx.field(static=True)

    def __init__(
        self,
        steps: int = 1000,
        *,
        corrector_steps: int = 1,
        snr: float = 0.16,
        eps: float = 1e-3,
        time_grid: TimeGrid = "uniform",
        denoise: bool = True,
    ):
        owner = "PredictorCorrector"
        self.steps = check_steps(owner, steps)
        self.corrector_steps = check_steps(owner, corrector_steps, "corrector_steps")
        if not snr > 0:
            raise ValueError(
                f"{owner}: `snr` must be > 0, got {snr!r}. Song et al. use 0.16 (VE) and "
                "0.01 to 0.27 in their ablations."
            )
        self.snr = float(snr)
        self.eps = check_sampling_eps(owner, eps)
        check_time_grid(owner, time_grid)
        self.time_grid = time_grid
        self.denoise = denoise

    def _correct(
        self, sde: AbstractForwardSDE, score: BatchedFn, x: Array, t: Array, s: Array, key: Any
    ) -> Array:
        a = (sde.mean_coeff(t) / sde.mean_coeff(s)) ** 2

        def langevin(x: Array, k: Any) -> tuple[Array, None]:
            grad = score(t, x)
            z = jr.normal(k, x.shape, x.dtype)
            step = 2 * a * (self.snr * _mean_norm(z) / _mean_norm(grad)) ** 2
            return x + step * grad + jnp.sqrt(2 * step) * z, None

        x, _ = jax.lax.scan(langevin, x, jr.split(key, self.corrector_steps))
        return x

    def run(
        self,
        score_fn: ScoreFn,
        sde: AbstractForwardSDE,
        x_T: Array,
        args: Args,
        key: PRNGKeyArray | None,
    ) -> tuple[Array, Array]:
        key = require_key("PredictorCorrector", key, "Langevin steps and the reverse SDE")
        score = bind_args(score_fn, args)
        ts = time_grid(sde, self.steps, self.time_grid, eps=self.eps, dtype=x_T.dtype)

        def step(x: Array, inputs: Any) -> tuple[Array, None]:
            t, s, on, k = inputs
            corrector_key, predictor_key = jr.split(k)
            x = self._correct(sde, score, x, t, s, corrector_key)
            return reverse_step(sde, score, x, t, s, on, predictor_key), None

        xs = (ts[:-1], ts[1:], noise_switch(self.steps, self.denoise, x_T.dtype),
              jr.split(key, self.steps))  # fmt: skip
        x, _ = jax.lax.scan(step, x_T, xs)
        return x, jnp.asarray(self.steps * (self.corrector_steps + 1))


__all__ = ["PredictorCorrector"]
