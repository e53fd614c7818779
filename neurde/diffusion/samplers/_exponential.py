r"""What the exponential-integrator multistep samplers share: data prediction and history.

DPM-Solver++, UniPC and DEIS write one step from $s = t_i$ to $t = t_{i+1}$ as a linear
combination $x_t = a_i x_s + \sum_k c_{ik} m_{i-k}$ of the state and the last few model
outputs $m$ (data predictions $\hat x_0$ or noise predictions $\hat\epsilon$). The
coefficients depend on the grid only, so they are computed once, vectorized over the steps,
before the `lax.scan`; the scanned step is the evaluation and a weighted sum.
"""

import jax.numpy as jnp
from jaxtyping import Array

from ..forward import AbstractForwardSDE
from ._fixed_grid import BatchedScore


def data_prediction(score: BatchedScore, t: Array, x: Array) -> Array:
    r"""The data prediction $\hat x_0 = (x - \sigma_t\hat\epsilon)/\alpha_t$ of a batch."""
    sde = score.sde
    return (x - sde.std(t) * score.noise(t, x)) / sde.mean_coeff(t)


def previous(values: Array, k: int) -> Array:
    """`values[i - k]` for each step `i < len(values) - 1`, `values[0]` before the start."""
    n = values.shape[0] - 1
    padded = jnp.concatenate([jnp.repeat(values[:1], k), values])
    return padded[:n]


def combine(coeffs: Array, history: tuple[Array, ...]) -> Array:
    """`sum_k coeffs[k] * history[k]`, with scalar coefficients."""
    out = coeffs[0] * history[0]
    for c, m in zip(coeffs[1:], history[1:], strict=True):
        out = out + c * m
    return out


def push(history: tuple[Array, ...], m: Array) -> tuple[Array, ...]:
    """The history with `m` as the newest entry and the oldest dropped."""
    return (m, *history[:-1])


def dpmpp_coefficients(
    sde: AbstractForwardSDE, ts: Array, order: int, stochastic: bool
) -> tuple[Array, Array, Array]:
    r"""DPM-Solver++'s multistep coefficients: $a_i$, $c_{ik}$ (k = 0, 1, 2) and the noise std.

    With $h = \lambda_t - \lambda_s$, $\eta h$ the effective step ($\eta$ = 1, ODE; 2, SDE),
    $\varphi_1 = 1 - e^{-\eta h}$, $\varphi_2 = 1 - \varphi_1/(\eta h)$,
    $\varphi_3 = \varphi_2/(\eta h) - \tfrac12$, $r_0 = h_{i-1}/h$, $r_1 = h_{i-2}/h$,
    $D_{1,0} = (m_i - m_{i-1})/r_0$, $D_{1,1} = (m_{i-1} - m_{i-2})/r_1$:

    $x_t = \frac{\sigma_t}{\sigma_s}e^{-(\eta-1)h}x_s + \alpha_t(\varphi_1 m_i + \Delta)
    + [\sigma_t\sqrt{1 - e^{-2h}}\,z]$, with $\Delta = 0$ (first step),
    $\tfrac12\varphi_1 D_{1,0}$ (order 2 ODE, "midpoint") or $\varphi_2 D_{1,0}$ (order 2 within
    the SDE 3M, k-diffusion), and $\varphi_2 D_1 - 2\varphi_3 D_2$ (order 3, $D_1 = D_{1,0} +
    \frac{r_0}{r_0 + r_1}(D_{1,0} - D_{1,1})$, $D_2 = \frac{D_{1,0} - D_{1,1}}{r_0 + r_1}$).

    Deviation: the reference implementations (DPM-Solver's, diffusers', k-diffusion's) weight
    $D_2$ by $\varphi_3$. Taylor expansion gives $D_1 = h\hat x_0' + O(h^3)$ and $D_2 =
    \tfrac12 h^2\hat x_0'' + O(h^3)$, while the exact integral weights $\hat x_0''$ by
    $-\alpha_t h^2\varphi_3$; so $D_2$'s weight is $2\varphi_3$. With $\varphi_3$ the step is
    only locally third order (global order 2); with $2\varphi_3$ the error of one step from
    exact history falls as $h^4$ (tests/diffusion/test_samplers_fast.py: slope 4.1 here, 3.2
    with the reference weight).
    """
    n = ts.shape[0] - 1
    lams, alpha, sigma = sde.log_snr(ts), sde.mean_coeff(ts), sde.std(ts)
    h = lams[1:] - lams[:-1]
    step = jnp.arange(n)
    has1, has2 = (step >= 1)[:, None], (step >= 2)[:, None]
    lam_1, lam_2 = previous(lams, 1), previous(lams, 2)
    r0 = jnp.where(step >= 1, (lams[:-1] - lam_1) / h, 1.0)
    r1 = jnp.where(step >= 2, (lam_1 - lam_2) / h, 1.0)
    eh = (2.0 if stochastic else 1.0) * h
    phi_1 = -jnp.expm1(-eh)
    phi_2 = jnp.expm1(-eh) / eh + 1
    phi_3 = phi_2 / eh - 0.5
    zero, one = jnp.zeros_like(h), jnp.ones_like(h)
    e0 = jnp.stack([one, zero, zero], 1)
    d10 = jnp.stack([1 / r0, -1 / r0, zero], 1)
    d11 = jnp.stack([zero, 1 / r1, -1 / r1], 1)
    d1 = d10 + (r0 / (r0 + r1))[:, None] * (d10 - d11)
    d2 = (d10 - d11) / (r0 + r1)[:, None]
    first = phi_1[:, None] * e0
    weight_2 = phi_2 if (stochastic and order == 3) else 0.5 * phi_1
    second = first + weight_2[:, None] * d10
    third = first + phi_2[:, None] * d1 - 2 * phi_3[:, None] * d2
    coeffs = jnp.where(has1, second, first)
    if order == 3:
        coeffs = jnp.where(has2, third, coeffs)
    a = sigma[1:] / sigma[:-1] * (jnp.exp(-h) if stochastic else 1.0)
    noise_std = sigma[1:] * jnp.sqrt(-jnp.expm1(-2 * h)) if stochastic else jnp.zeros_like(h)
    return a, alpha[1:, None] * coeffs, noise_std


__all__ = ["combine", "data_prediction", "dpmpp_coefficients", "previous", "push"]
