r"""Sampling the diffusion times of a training batch, with the weights that keep it unbiased.

The denoising score-matching objective is an average over $t \sim \mathcal{U}[\epsilon, T]$.
Three estimators of that average:

- `"uniform"`: i.i.d. $t_i \sim \mathcal{U}[\epsilon, T]$.
- `"low_discrepancy"`: one $u \sim \mathcal{U}[0, 1]$ per batch and
  $t_i = \epsilon + (T-\epsilon)\,((u + i/B) \bmod 1)$, $i = 0..B-1$: every stratum of width
  $1/B$ holds exactly one time, so the batch mean has lower variance (Kingma, Salimans, Poole,
  Ho, "Variational Diffusion Models", NeurIPS 2021, Appendix I.1).
- `"importance"`: $t \sim p(t) \propto g(t)^2/\sigma_t^2$, the density that makes the
  likelihood weighting $\lambda(t) = g(t)^2$ constant in noise space, by inverting its CDF
  in closed form; each term is reweighted by $1 / ((T - \epsilon)\,p(t))$ (Song, Durkan,
  Murray, Ermon, "Maximum Likelihood Training of Score-Based Diffusion Models", NeurIPS 2021,
  Sec. 5).
"""

from typing import Literal, TypeAlias

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import TIME_SAMPLINGS, check_choice, check_eps, check_integer
from .forward import AbstractForwardSDE

# How training times are drawn: `"uniform"`, `"low_discrepancy"` or `"importance"`
# (`sample_times`, `dsm_loss`).
TimeSampling: TypeAlias = Literal["uniform", "low_discrepancy", "importance"]


def sample_times(
    sde: AbstractForwardSDE,
    num: int,
    *,
    method: TimeSampling = "uniform",
    eps: float = 1e-5,
    key: PRNGKeyArray,
) -> tuple[Float[Array, " num"], Float[Array, " num"]]:
    r"""Draw `num` diffusion times in $[\epsilon, T]$ and their importance weights.

    **Arguments:**

    - `sde`: the forward SDE (used by `"importance"`).
    - `num`: how many times (the batch size).
    - `method`: `"uniform"`, `"low_discrepancy"` or `"importance"` (module docstring).
    - `eps`: the smallest time, $0 < \epsilon < 1$.
    - `key`: randomness.

    **Returns:**

    `(t, weights)`: $\mathbb{E}[\text{mean}_i\, w_i\, \ell(t_i)] = \frac{1}{T-\epsilon}
    \int_\epsilon^T \ell(t)\,dt$ for any $\ell$. The weights are 1 except for `"importance"`.
    """
    owner = "sample_times"
    eps = check_eps(owner, eps)
    check_choice(owner, "method", method, TIME_SAMPLINGS)
    check_integer(owner, "num", num, fix="It is the number of times, the batch size.")
    T = sde.T
    if method == "uniform":
        t = jr.uniform(key, (num,), minval=eps, maxval=T)
        return t, jnp.ones_like(t)
    if method == "low_discrepancy":
        u = jr.uniform(key, ())
        t = eps + (T - eps) * jnp.mod(u + jnp.arange(num) / num, 1.0)
        return t, jnp.ones_like(t)
    lo = sde.likelihood_weight_integral(eps)
    hi = sde.likelihood_weight_integral(T)
    phi = jr.uniform(key, (num,), minval=lo, maxval=hi)
    t = jnp.clip(sde.likelihood_weight_integral_inverse(phi), eps, T)
    # p(t) = (g^2 / sigma^2) / (hi - lo); the weight 1 / ((T - eps) p(t)) times the
    # likelihood weighting g^2 / sigma^2 (noise space) is the constant (hi - lo) / (T - eps).
    density = sde.diffusion(t) ** 2 / sde.std(t) ** 2 / (hi - lo)
    return t, 1.0 / ((T - eps) * density)


__all__ = ["TimeSampling", "sample_times"]
