r"""Restart sampling (Xu et al. 2023): EDM's Heun ODE solver with noisy restarts."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._checks import check_eps, check_integer, check_positive, check_steps
from ..forward import AbstractForwardSDE
from ._fixed_grid import AbstractFixedGridSampler, BatchedScore, Keys
from .edm import _churn, _direction, _heun, _karras_sigmas


class Restart(AbstractFixedGridSampler[Array]):
    r"""Restart sampling (Xu et al. 2023): ODE steps, and $K$ noisy jumps back up an interval.

    The main pass is `EDMHeun`'s deterministic sampler: Heun's method for
    $dy/d\tilde\sigma = \hat\epsilon(t, \alpha_t y)$ on the Karras levels
    $\tilde\sigma_0 > \dots > \tilde\sigma_{N-1}$, then an Euler step to $\tilde\sigma = 0$.
    On reaching $t_\min$ (the main level nearest to `t_min`, in $\log\tilde\sigma$), it
    restarts $K$ times: forward noise jumps from $t_\min$ back to $t_\max$,

    $$y \leftarrow y + \sqrt{t_\max^2 - t_\min^2}\;z,$$

    (exact for the forward process, which adds $\mathcal N(0, \tilde\sigma^2)$ in $y$), and
    $N_\text{Restart}$ Heun steps on Karras levels from $t_\max$ back to $t_\min$ solve the ODE
    again (Algorithm 1). The noise contracts the errors accumulated so far, and the ODE steps
    add little new error. NFE $= 2N - 1 + 2KN_\text{Restart}$, counted exactly; everything
    is one `lax.scan` over a table of steps built before it. $\tilde\sigma = \sigma_t/
    \alpha_t$ as in `EDMHeun`; deviations: $t_\max$ is capped at $\tilde\sigma(T)$, and
    $t_\min$ is snapped to the main grid (if that puts it above $t_\max$, the restarts do
    nothing: choose `steps` so that a main level lies inside the interval). With
    `restarts=0` this is `EDMHeun` exactly. Works for every SDE.

    **Arguments:**

    - `steps`: $N \ge 2$, the main Heun steps.
    - `restart_steps`: $N_\text{Restart} \ge 1$, Heun steps per restart (default 3).
    - `restarts`: $K \ge 0$, the number of restarts (default 2).
    - `t_min`, `t_max`: the restart interval in $\tilde\sigma$ (defaults 0.06 and 0.3,
      the paper's for CIFAR-10 with EDM).
    - `rho`: $\rho$ of the Karras levels (default 7).
    - `eps`: sets $\tilde\sigma_{\min} = \tilde\sigma(\epsilon)$ (default $10^{-3}$).

    References: Xu, Deng, Chen, Tian, Liu, Jaakkola, "Restart Sampling for Improving
    Generative Processes", NeurIPS 2023.
    """

    steps: int = eqx.field(static=True, default=18)
    restart_steps: int = eqx.field(static=True, default=3, kw_only=True)
    restarts: int = eqx.field(static=True, default=2, kw_only=True)
    t_min: float = eqx.field(static=True, default=0.06, kw_only=True)
    t_max: float = eqx.field(static=True, default=0.3, kw_only=True)
    rho: float = eqx.field(static=True, default=7.0, kw_only=True)
    eps: float = eqx.field(static=True, default=1e-3, kw_only=True)

    def __check_init__(self):
        owner = "Restart"
        fix = "The main pass needs a level strictly between the ends to restart at."
        check_integer(owner, "steps", self.steps, minimum=2, fix=fix)
        check_steps(owner, self.restart_steps, "restart_steps")
        check_integer(owner, "restarts", self.restarts, minimum=0, fix="0 is EDMHeun.")
        check_eps(owner, self.eps)
        check_positive(owner, "rho", self.rho)
        check_positive(owner, "t_min", self.t_min, "It is a noise level sigma/alpha.")
        if not self.t_min < self.t_max:
            raise ValueError(
                f"Restart: `t_min` must be < `t_max`, got t_min={self.t_min!r}, "
                f"t_max={self.t_max!r}. The restart jumps from t_min back up to t_max; "
                "Xu et al. use t_min=0.06, t_max=0.3 (CIFAR-10)."
            )

    def nfe(self) -> int:
        return 2 * self.steps - 1 + 2 * self.restarts * self.restart_steps

    def randomness(self) -> str | None:
        return f"restarts={self.restarts} > 0 add noise" if self.restarts > 0 else None

    def _main(self, sde: AbstractForwardSDE, dtype: Any) -> Array:
        hi = jnp.exp(-sde.log_snr(jnp.asarray(sde.T, dtype)))
        lo = jnp.exp(-sde.log_snr(jnp.asarray(self.eps, dtype)))
        return _karras_sigmas(hi, lo, self.steps, self.rho)

    def init(self, sde: AbstractForwardSDE, x_T: Array, keys: Keys) -> tuple[Array, Any]:
        dtype = x_T.dtype
        main = self._main(sde, dtype)
        n_main, k, nr = self.steps - 1, self.restarts, self.restart_steps
        # t_min snapped to the main levels 1..N-1; the restarts follow the step reaching it.
        j = 1 + jnp.argmin(jnp.abs(jnp.log(main[1:] / self.t_min)))
        t_min = main[j]
        # A coarse main grid may snap t_min above t_max: the restarts are then empty (no
        # noise, steps of length 0) rather than steps up in sigma.
        t_max = jnp.maximum(jnp.minimum(jnp.asarray(self.t_max, dtype), main[0]), t_min)
        levels = _karras_sigmas(t_max, t_min, nr + 1, self.rho)
        jump = jnp.sqrt(jnp.maximum(t_max**2 - t_min**2, 0.0))
        rows = jnp.arange(n_main + k * nr)
        inside = (rows >= j) & (rows < j + k * nr)
        r = jnp.where(inside, (rows - j) % nr, 0)
        m = jnp.clip(jnp.where(rows < j, rows, rows - k * nr), 0, n_main - 1)
        sigma = jnp.where(inside, levels[r], main[m])
        sigma_next = jnp.where(inside, levels[r + 1], main[m + 1])
        noise = jnp.where(inside & (r == 0), jump, 0.0)
        row_keys = None if keys is None else jr.split(keys[0], rows.shape[0])
        y = x_T / sde.mean_coeff(jnp.asarray(sde.T, dtype))
        return y, (sigma, noise, sigma_next, row_keys)

    def step(self, score: BatchedScore, state: Array, inputs: Any) -> Array:
        sigma, noise, sigma_next, key = inputs
        return _heun(score, _churn(state, noise, key), sigma, sigma_next)

    def finish(self, score: BatchedScore, state: Array, keys: Keys) -> Array:
        sigma = self._main(score.sde, state.dtype)[-1]
        return state - sigma * _direction(score, state, sigma)


__all__ = ["Restart"]
