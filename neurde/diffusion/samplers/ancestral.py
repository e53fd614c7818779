r"""Ancestral sampling of DDPM, for the VP SDE only."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from ..._types import Args
from ..ddpm import respaced_betas
from ..forward import VPSDE, AbstractForwardSDE
from ..score import ScoreFn
from .base import AbstractSampler, bind_args, check_sampling_eps, check_steps, require_key


class Ancestral(AbstractSampler):
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
    is the VP SDE's discretisation (for VE, Song et al.'s "reverse diffusion" predictor is
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
        self.eps = check_sampling_eps("Ancestral", eps)

    def run(
        self,
        score_fn: ScoreFn,
        sde: AbstractForwardSDE,
        x_T: Array,
        args: Args,
        key: PRNGKeyArray | None,
    ) -> tuple[Array, Array]:
        if not isinstance(sde, VPSDE):
            raise ValueError(
                f"Ancestral: DDPM's ancestral sampling is defined for the VP SDE only, got "
                f"sde={type(sde).__name__}(...). Use `EulerMaruyama`, `PredictorCorrector` "
                "or `DDIM(eta=1.0)` for VE and sub-VP SDEs."
            )
        key = require_key("Ancestral", key, "it adds fresh noise at every step")
        score = bind_args(score_fn, args)
        n, dtype = self.steps, x_T.dtype
        increasing = self.eps + (sde.T - self.eps) * jnp.arange(n, dtype=dtype) / max(n - 1, 1)
        if n == 1:
            increasing = jnp.full((1,), sde.T, dtype)
        betas = respaced_betas(sde, increasing)
        noisy = (jnp.arange(n) > 0).astype(dtype)

        def step(x: Array, inputs: Any) -> tuple[Array, None]:
            t, beta, on, k = inputs
            mean = (x + beta * score(t, x)) / jnp.sqrt(1 - beta)
            return mean + on * jnp.sqrt(beta) * jr.normal(k, x.shape, dtype), None

        xs = (increasing, betas, noisy, jr.split(key, n))
        x, _ = jax.lax.scan(step, x_T, xs, reverse=True)
        return x, jnp.asarray(n)


__all__ = ["Ancestral"]
