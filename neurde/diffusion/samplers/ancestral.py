r"""Ancestral sampling of DDPM, for the VP SDE only."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._checks import check_eps, check_steps
from ..ddpm import respaced_betas
from ..forward import VPSDE, AbstractForwardSDE
from ._fixed_grid import AbstractFixedGridSampler, BatchedScore, Keys


class Ancestral(AbstractFixedGridSampler[Array]):
    r"""DDPM's ancestral sampling (Ho et al. 2020, Algorithm 2), in score form.

    On $N$ times $t_N = T > \dots > t_1 = \epsilon$, uniform, and $t_0 = 0$, with the
    respaced betas $\beta_i = 1 - \alpha_{t_i}^2/\alpha_{t_{i-1}}^2$
    (`neurde.diffusion.respaced_betas`, so that $\bar\alpha_i = \alpha_{t_i}^2$ exactly):

    $$x_{i-1} = \frac{x_i + \beta_i\,s_\theta(t_i, x_i)}{\sqrt{1-\beta_i}} + \sqrt{\beta_i}\,z_i,$$

    Song et al. 2021, eq. 47 ($\hat\epsilon = -\sqrt{1-\bar\alpha_i}\,s$ turns it into Ho et
    al.'s form; $\sigma_i^2 = \beta_i$ as in Ho et al. and the reference code). The last
    step ($i = 1$) adds no noise: it is Tweedie's denoiser $\mathbb{E}[x_0 \mid x_{t_1}]$,
    so the samples are at $t = 0$. One score evaluation per step.

    Defined for `VPSDE` only: the update is the Gaussian posterior of DDPM's chain, which
    is the VP SDE's discretization (for VE, Song et al.'s "reverse diffusion" predictor is
    the analogue; use `EulerMaruyama` or `DDIM(eta=1)` there).

    **Arguments:**

    - `steps`: $N$ (= NFE).
    - `eps`: $t_1$ (default $10^{-3}$).

    References: Ho, Jain, Abbeel, NeurIPS 2020; Song et al., ICLR 2021, Appendix E;
    Nichol & Dhariwal, ICML 2021 (respacing).
    """

    steps: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(self, steps: int = 1000, *, eps: float = 1e-3):
        self.steps = check_steps("Ancestral", steps)
        self.eps = check_eps("Ancestral", eps)

    def nfe(self) -> int:
        return self.steps

    def randomness(self) -> str:
        return "it adds fresh noise at every step"

    def init(self, sde: AbstractForwardSDE, x_T: Array, keys: Keys) -> tuple[Array, Any]:
        if not isinstance(sde, VPSDE):
            raise ValueError(
                "Ancestral: `sde` must be a VPSDE (DDPM's ancestral sampling is defined for "
                f"the VP SDE only), got {type(sde).__name__}. Use `EulerMaruyama`, "
                "`PredictorCorrector` or `DDIM(eta=1.0)` for VE and sub-VP SDEs."
            )
        n, dtype = self.steps, x_T.dtype
        increasing = self.eps + (sde.T - self.eps) * jnp.arange(n, dtype=dtype) / max(n - 1, 1)
        if n == 1:
            increasing = jnp.full((1,), sde.T, dtype)
        noisy = (jnp.arange(n) > 0).astype(dtype)
        # Indexed i = 1..N along increasing times, each with key i; the chain runs i = N..1.
        inputs = (increasing, respaced_betas(sde, increasing), noisy, keys)
        return x_T, jax.tree.map(lambda a: a[::-1], inputs)

    def step(self, score: BatchedScore, state: Array, inputs: Any) -> Array:
        t, beta, noisy, key = inputs
        mean = (state + beta * score(t, state)) / jnp.sqrt(1 - beta)
        return mean + noisy * jnp.sqrt(beta) * jr.normal(key, state.shape, state.dtype)

    def finish(self, score: BatchedScore, state: Array, keys: Keys) -> Array:
        return state


__all__ = ["Ancestral"]
