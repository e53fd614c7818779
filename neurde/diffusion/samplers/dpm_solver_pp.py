r"""DPM-Solver++: exponential integrators of the probability-flow ODE in data prediction."""

from typing import Any, Literal, TypeAlias

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._checks import check_choice, check_schedule
from ..forward import AbstractForwardSDE
from ._exponential import (
    Warmup,
    check_warmup,
    combine,
    data_prediction,
    dpmpp_coefficients,
    first_step_or,
    push,
)
from ._fixed_grid import AbstractFixedGridSampler, BatchedScore, Keys
from .base import TimeGrid, time_grid

# The state: x, and the data predictions at the three previous times (newest first).
_History: TypeAlias = tuple[Array, tuple[Array, ...]]

_SOLVERS = {
    "2S": "singlestep, 2 evaluations per step",
    "2M": "multistep order 2, 1 evaluation per step",
    "3M": "multistep order 3, 1 evaluation per step",
}


class DPMSolverPP(AbstractFixedGridSampler[_History]):
    r"""DPM-Solver++ 2S, 2M and 3M (Lu et al. 2022b): DPM-Solver in data prediction.

    With the data prediction $\hat x_0 = (x - \sigma_t\hat\epsilon)/\alpha_t$ the
    probability-flow ODE is $x_t = \frac{\sigma_t}{\sigma_s}x_s + \sigma_t
    \int_{\lambda_s}^{\lambda_t} e^{\lambda}\hat x_0\,d\lambda$, and with $h = \lambda_t -
    \lambda_s$ the first-order step is $x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t(1 -
    e^{-h})\hat x_0(x_s)$ (= DDIM). Bounded predictions ($\hat x_0$ stays in the data range)
    make it the more stable form under guidance.

    - `"2S"` (Algorithm 1, $r = \tfrac12$): $u = \frac{\sigma_{s_1}}{\sigma_s}x_s +
      \alpha_{s_1}(1 - e^{-h/2})\hat x_0(x_s)$ at $\lambda_{s_1} = \lambda_s + h/2$, then
      $x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t(1 - e^{-h})\hat x_0(u)$. NFE = 2 `steps`,
      global order 2.
    - `"2M"` (Algorithm 2): with $r_0 = h_{i-1}/h$, $x_t = \frac{\sigma_t}{\sigma_s}x_s +
      \alpha_t(1 - e^{-h})\big(\hat x_{0,i} + \frac{1}{2r_0}(\hat x_{0,i} - \hat x_{0,i-1})\big)$.
    - `"3M"`: the third-order multistep update, $+\alpha_t(\varphi_2 D_1 - 2\varphi_3 D_2)$
      (formulas and a deviation from the reference code, which weights $D_2$ by $\varphi_3$
      and so is second order, in `_exponential.py`).

    The multistep solvers take one evaluation per step (NFE = `steps`) and, by default, warm
    up as the reference implementation does: the first step is order 1 and 3M's second order
    2. 2S and 2M are second order. One 3M step from exact history is third order (its error
    falls as $h^4$), but the first-order first step (local error $O(h^2)$) makes the whole run
    second order. On the standard VP SDE that step lies near $\lambda_T$, where $\hat x_0$
    barely changes, so it shows only past hundreds of steps (slope 4 at 40-160 steps, 2.3 at
    320-640); where $\alpha_T$ is not small it shows at once (slope 2.0 with $\beta_{\max} = 2$).
    `warmup="singlestep"` takes the first step with the second-order singlestep update
    (`_exponential.singlestep`, one more evaluation): 3M is then third order (slope 2.95 at
    40-160 steps, tests/diffusion/test_sampler_warmup.py). The default grid is Karras et
    al.'s (`"edm"`: "DPM++ 2M Karras").
    Works for every SDE. `DPMSolverPPSDE` is the stochastic variant.

    **Arguments:**

    - `steps`: number of steps (>= 1).
    - `solver`: `"2M"` (default), `"3M"` or `"2S"`.
    - `eps`: the last time (default $10^{-3}$).
    - `time_grid`: `"edm"` (default), `"logsnr"` or `"uniform"`.
    - `warmup`: `"lower_order"` (default, the paper's) or `"singlestep"` (3M only; NFE =
      `steps + 1`).

    References: Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver++: Fast Solver for Guided Sampling
    of Diffusion Probabilistic Models", 2022 (Algorithms 1 and 2, Appendix).
    """

    steps: int = eqx.field(static=True)
    solver: Literal["2S", "2M", "3M"] = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    warmup: Warmup = eqx.field(static=True)
    # A grid object (`check_schedule` converts names); not static: it may hold arrays.
    time_grid: TimeGrid

    def __init__(
        self,
        steps: int = 20,
        *,
        solver: Literal["2S", "2M", "3M"] = "2M",
        eps: float = 1e-3,
        time_grid: TimeGrid = "edm",
        warmup: Warmup = "lower_order",
    ):
        owner = "DPMSolverPP"
        self.steps, self.eps, self.time_grid = check_schedule(owner, steps, eps, time_grid)
        fix = "For the stochastic 2M/3M use DPMSolverPPSDE; for order 1 use DDIM."
        check_choice(owner, "solver", solver, _SOLVERS, fix)
        self.solver = solver
        why = "the 3M solver's first-order first step"
        self.warmup = check_warmup(owner, warmup, solver == "3M", why)

    def nfe(self) -> int:
        if self.solver == "2S":
            return 2 * self.steps
        return self.steps + (self.warmup == "singlestep")

    def randomness(self) -> None:
        return None

    def init(self, sde: AbstractForwardSDE, x_T: Array, keys: Keys) -> tuple[_History, Any]:
        ts = time_grid(sde, self.steps, self.time_grid, eps=self.eps, dtype=x_T.dtype)
        zeros = jnp.zeros_like(x_T)
        state = (x_T, (zeros, zeros, zeros))
        if self.solver == "2S":
            lams = sde.log_snr(ts)
            mid = sde.time_from_log_snr(0.5 * (lams[:-1] + lams[1:]))
            return state, (ts[:-1], mid, ts[1:])
        a, coeffs, _ = dpmpp_coefficients(sde, ts, 3 if self.solver == "3M" else 2, False)
        return state, (jnp.arange(self.steps) == 0, ts[:-1], ts[1:], a, coeffs)

    def step(self, score: BatchedScore, state: _History, inputs: Any) -> _History:
        x, history = state
        if self.solver == "2S":
            return _singlestep(score, x, *inputs), history
        first, s, t, a, coeffs = inputs
        m = data_prediction(score, s, x)
        history = push(history, m)
        x_next = a * x + combine(coeffs, history)
        if self.warmup == "singlestep":
            x_next = first_step_or(first, score, x, s, t, m, 2, x_next)
        return x_next, history

    def finish(self, score: BatchedScore, state: _History, keys: Keys) -> Array:
        return state[0]


def _singlestep(score: BatchedScore, x: Array, s: Array, mid: Array, t: Array) -> Array:
    sde = score.sde
    lam_s, lam_m, lam_t = sde.log_snr(s), sde.log_snr(mid), sde.log_snr(t)
    sigma_s = sde.std(s)
    x0 = data_prediction(score, s, x)
    u = sde.std(mid) / sigma_s * x - sde.mean_coeff(mid) * jnp.expm1(lam_s - lam_m) * x0
    x0_mid = data_prediction(score, mid, u)
    return sde.std(t) / sigma_s * x - sde.mean_coeff(t) * jnp.expm1(lam_s - lam_t) * x0_mid


__all__ = ["DPMSolverPP"]
