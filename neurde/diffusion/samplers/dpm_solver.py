r"""DPM-Solver: exponential integrators of the probability-flow ODE in log-SNR time."""

from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._checks import check_choice, check_schedule
from ..forward import AbstractForwardSDE
from ._fixed_grid import AbstractFixedGridSampler, BatchedScore, Keys
from .base import TimeGrid, time_grid
from .grids import AbstractTimeGrid


def _stage(
    sde: AbstractForwardSDE, x: Array, t: Array, lam_t: Array, h: Array, eps_t: Array
) -> tuple[Array, Array, Array, Array]:
    """Time, alpha, sigma and the first-order prediction at lambda_t + h."""
    s = sde.time_from_log_snr(lam_t + h)
    alpha_s, sigma_s = sde.mean_coeff(s), sde.std(s)
    first = alpha_s / sde.mean_coeff(t) * x - sigma_s * jnp.expm1(h) * eps_t
    return s, alpha_s, sigma_s, first


class DPMSolver(AbstractFixedGridSampler[Array]):
    r"""Singlestep DPM-Solver-1, -2 and -3 (Lu et al. 2022, eq. 3.7 and Algorithms 1, 2).

    In $\lambda = \log(\alpha/\sigma)$ the probability-flow ODE is
    $x_t = \frac{\alpha_t}{\alpha_s}x_s - \alpha_t\int_{\lambda_s}^{\lambda_t}
    e^{-\lambda}\hat\epsilon\,d\lambda$; the linear part is solved exactly and the noise
    prediction $\hat\epsilon = -\sigma_t s_\theta$ is Taylor-expanded in $\lambda$. With
    $h = \lambda_t - \lambda_s$ and $\phi_1 = e^h - 1$:

    - order 1: $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t\phi_1\hat\epsilon(x_s, s)$
      (= deterministic DDIM);
    - order 2 ($r_1 = \tfrac12$): an intermediate $u$ at $\lambda_s + r_1 h$ by order 1, then
      $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t\phi_1\hat\epsilon_s -
      \frac{\sigma_t}{2r_1}\phi_1(\hat\epsilon(u) - \hat\epsilon_s)$;
    - order 3 ($r_1 = \tfrac13$, $r_2 = \tfrac23$): two intermediates, the second corrected by
      $\frac{r_2}{r_1}\sigma_{s_2}(\frac{e^{r_2h}-1}{r_2h} - 1)D_1$, then
      $x_t = \dots - \frac{\sigma_t}{r_2}(\frac{\phi_1}{h} - 1)D_2$.

    A step of order $k$ costs $k$ score evaluations: NFE = `order * steps`. Global order
    $k$ in the step size (tests/diffusion/test_samplers.py fits it). The default grid is
    uniform in $\lambda$, the paper's choice for low-resolution data. This is the singlestep
    variant with a constant order (the paper's "DPM-Solver-fast" mixes orders to hit an NFE
    budget exactly; here pick `steps = NFE // order`); `DPMSolverMultistep` spends one
    evaluation per step and is the more accurate at small budgets. Works for every SDE (it
    needs only $\alpha_t$, $\sigma_t$ and $t(\lambda)$).

    **Arguments:**

    - `steps`: number of steps $M$.
    - `order`: 1, 2 or 3 (default 3).
    - `eps`: the last time (default $10^{-3}$).
    - `time_grid`: `"logsnr"` (default), `"uniform"`, `"edm"` or a grid object
      (`KarrasGrid(rho)`, a fitted `OptimizedGrid`).

    References: Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver: A Fast ODE Solver for Diffusion
    Probabilistic Model Sampling in Around 10 Steps", NeurIPS 2022.
    """

    steps: int = eqx.field(static=True)
    order: Literal[1, 2, 3] = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    time_grid: AbstractTimeGrid

    def __init__(
        self,
        steps: int = 10,
        *,
        order: Literal[1, 2, 3] = 3,
        eps: float = 1e-3,
        time_grid: TimeGrid = "logsnr",
    ):
        self.steps, self.eps, self.time_grid = check_schedule("DPMSolver", steps, eps, time_grid)
        fix = "Order 1 is DDIM; 3 is the most accurate per evaluation for smooth scores."
        check_choice("DPMSolver", "order", order, {1: "", 2: "", 3: ""}, fix)
        self.order = order

    def nfe(self) -> int:
        return self.order * self.steps

    def randomness(self) -> None:
        return None

    def init(self, sde: AbstractForwardSDE, x_T: Array, keys: Keys) -> tuple[Array, Any]:
        ts = time_grid(sde, self.steps, self.time_grid, eps=self.eps, dtype=x_T.dtype)
        return x_T, (ts[:-1], ts[1:])

    def step(self, score: BatchedScore, state: Array, inputs: Any) -> Array:
        (s, t), sde, x = inputs, score.sde, state
        lam_s, lam_t = sde.log_snr(s), sde.log_snr(t)
        h = lam_t - lam_s
        eps_s = score.noise(s, x)
        _, _, sigma_t, first = _stage(sde, x, s, lam_s, h, eps_s)
        if self.order == 1:
            return first
        phi_1 = jnp.expm1(h)
        if self.order == 2:
            r1 = 0.5
            s1, _, _, u = _stage(sde, x, s, lam_s, r1 * h, eps_s)
            return first - sigma_t / (2 * r1) * phi_1 * (score.noise(s1, u) - eps_s)
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        s1, _, _, u1 = _stage(sde, x, s, lam_s, r1 * h, eps_s)
        d1 = score.noise(s1, u1) - eps_s
        s2, _, sigma_s2, u2 = _stage(sde, x, s, lam_s, r2 * h, eps_s)
        phi_22 = jnp.expm1(r2 * h) / (r2 * h) - 1
        u2 = u2 - (r2 / r1) * sigma_s2 * phi_22 * d1
        d2 = score.noise(s2, u2) - eps_s
        return first - sigma_t / r2 * (phi_1 / h - 1) * d2

    def finish(self, score: BatchedScore, state: Array, keys: Keys) -> Array:
        return state


__all__ = ["DPMSolver"]
