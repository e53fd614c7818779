r"""What the exponential-integrator multistep samplers share: data prediction and history.

DPM-Solver++, UniPC and DEIS write one step from $s = t_i$ to $t = t_{i+1}$ as a linear
combination $x_t = a_i x_s + \sum_k c_{ik} m_{i-k}$ of the state and the last few model
outputs $m$ (data predictions $\hat x_0$ or noise predictions $\hat\epsilon$). The
coefficients depend on the grid only, so they are computed once, vectorized over the steps,
before the `lax.scan`; the scanned step is the evaluation and a weighted sum.
"""

from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._checks import check_choice
from ..forward import AbstractForwardSDE
from ._fixed_grid import BatchedScore

# How a multistep sampler takes its first step, before it has a history.
Warmup: TypeAlias = Literal["lower_order", "singlestep"]
_WARMUPS = {
    "lower_order": "a first-order first step, as the reference codes",
    "singlestep": "a singlestep first step of the order the method needs, 1-2 more NFE",
}


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


def check_warmup(owner: str, warmup: Any, needed: bool, why: str) -> Warmup:
    """Check `warmup`; `needed` says whether this configuration's warm-up limits its order."""
    check_choice(owner, "warmup", warmup, _WARMUPS)
    if warmup == "singlestep" and not needed:
        raise ValueError(
            f"{owner}: `warmup='singlestep'` applies only where the lower-order start limits "
            f"the order ({why}), got it here. Leave `warmup` at its default 'lower_order'."
        )
    return warmup


def singlestep(score: BatchedScore, x: Array, s: Array, t: Array, x0_s: Array, order: int) -> Array:
    r"""One singlestep DPM-Solver++ step from $s$ to $t$ of order 2 or 3, given $\hat x_0(x_s)$.

    With $h = \lambda_t - \lambda_s$ and intermediate stages at $\lambda_s + r_k h$ (order 2:
    $r_1 = \tfrac12$, 2S; order 3: $r_1 = \tfrac13$, $r_2 = \tfrac23$, 3S): $u_1 =
    \frac{\sigma_{s_1}}{\sigma_s}x_s + \alpha_{s_1}(1 - e^{-r_1h})\hat x_0(x_s)$ and, for order 3,
    $u_2 = \frac{\sigma_{s_2}}{\sigma_s}x_s + \alpha_{s_2}(1 - e^{-r_2h})\hat x_0(x_s) +
    \frac{r_2}{r_1}\alpha_{s_2}\varphi_2(r_2h)(\hat x_0(u_1) - \hat x_0(x_s))$; then $x_t =
    \frac{\sigma_t}{\sigma_s}x_s + \alpha_t(1 - e^{-h})\hat x_0(x_s) + \frac{1}{r}\alpha_t
    \varphi_2(h)(\hat x_0(u_{\rm last}) - \hat x_0(x_s))$ ($r$ its stage, $\varphi_2(h) =
    1 - (1 - e^{-h})/h$). Local error $O(h^{k+1})$ for order $k$, at $k - 1$ evaluations here
    (Lu et al. 2022b, Algorithm 1 and the reference code's `singlestep_dpm_solver_third_update`,
    data prediction). Multistep samplers take it as their first step (`warmup="singlestep"`).
    """
    sde = score.sde
    lam_s = sde.log_snr(s)
    h = sde.log_snr(t) - lam_s
    sigma_s = sde.std(s)

    def stage(r: float, extra: Array | float) -> tuple[Array, Array]:
        u_time = sde.time_from_log_snr(lam_s + r * h)
        alpha_u = sde.mean_coeff(u_time)
        u = sde.std(u_time) / sigma_s * x - alpha_u * jnp.expm1(-r * h) * x0_s
        return u_time, u + alpha_u * extra

    def phi_2(hh: Array) -> Array:
        return jnp.expm1(-hh) / hh + 1

    if order == 2:
        r, (s1, u1) = 0.5, stage(0.5, 0.0)
        d = data_prediction(score, s1, u1) - x0_s
    else:
        s1, u1 = stage(1 / 3, 0.0)
        d1 = data_prediction(score, s1, u1) - x0_s
        r, (s2, u2) = 2 / 3, stage(2 / 3, 2 * phi_2(2 * h / 3) * d1)
        d = data_prediction(score, s2, u2) - x0_s
    alpha_t = sde.mean_coeff(t)
    first = sde.std(t) / sigma_s * x - alpha_t * jnp.expm1(-h) * x0_s
    return first + alpha_t * phi_2(h) / r * d


def first_step_or(
    first: Array, score: BatchedScore, x: Array, s: Array, t: Array, x0_s: Array, order: int,
    multistep: Array,
) -> Array:  # fmt: skip
    """`singlestep(...)` at the first step (`first` true), `multistep` at the others.

    A `lax.cond`, so the extra evaluations run (and count) at the first step only.
    """
    return jax.lax.cond(first, lambda: singlestep(score, x, s, t, x0_s, order), lambda: multistep)


__all__ = [
    "Warmup",
    "check_warmup",
    "combine",
    "data_prediction",
    "dpmpp_coefficients",
    "first_step_or",
    "previous",
    "push",
    "singlestep",
]
