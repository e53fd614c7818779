r"""DDPM's discrete noise schedule as a discretization of the VP SDE.

DDPM (Ho et al. 2020) noises data in $N$ steps, $x_i = \sqrt{1-\beta_i}\,x_{i-1} +
\sqrt{\beta_i}\,z_i$, with $\beta_i$ linear from $10^{-4}$ to $0.02$ at $N = 1000$. Song et al.
(2021, Appendix B, eqs. 25–28) write $\beta_i = \bar\beta_i / N$ with $\bar\beta_i$ linear
from $\beta_{\min}$ to $\beta_{\max}$; as $N \to \infty$ the chain becomes the VP SDE and
$\bar\alpha_i = \prod_{j \le i}(1 - \beta_j) \to \alpha_t^2 = e^{-B(t)}$ at $t = i/N$, with an
$O(1/N)$ error (tests/diffusion/test_forward_sdes.py).
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._validation import is_concrete
from ._checks import check_integer
from .forward import VPSDE


class DDPMSchedule(NamedTuple):
    r"""The arrays of a discrete DDPM schedule, indexed $i = 1, \dots, N$ (stored from 0).

    - `betas`: $\beta_i$.
    - `alphas`: $1 - \beta_i$.
    - `alphas_cumprod`: $\bar\alpha_i = \prod_{j \le i} \alpha_j$.
    - `times`: the continuous time $t_i = i / N$ of step $i$ in the VP SDE.
    """

    betas: Float[Array, " N"]
    alphas: Float[Array, " N"]
    alphas_cumprod: Float[Array, " N"]
    times: Float[Array, " N"]


def ddpm_schedule(sde: VPSDE, num_steps: int = 1000) -> DDPMSchedule:
    r"""DDPM's linear schedule with `num_steps` steps, matching a `VPSDE`.

    $\beta_i = (\beta_{\min} + (\beta_{\max}-\beta_{\min})\frac{i-1}{N-1}) / N$ (Song et al.
    2021, Appendix B; Ho et al. 2020 is `VPSDE(0.1, 20)` with $N = 1000$).

    **Arguments:**

    - `sde`: a `VPSDE`; its `beta_min`, `beta_max` fix the schedule.
    - `num_steps`: $N \ge 2$.

    **Returns:**

    A `DDPMSchedule`.
    """
    if not isinstance(sde, VPSDE):
        raise TypeError(
            "ddpm_schedule: `sde` must be a VPSDE (DDPM's schedule discretizes the VP SDE), "
            f"got {type(sde).__name__}. Pass a `neurde.diffusion.VPSDE`."
        )
    n = check_integer("ddpm_schedule", "num_steps", num_steps, minimum=2)
    betas = jnp.linspace(sde.beta_min / n, sde.beta_max / n, n)
    alphas = 1.0 - betas
    times = jnp.arange(1, n + 1) / n
    return DDPMSchedule(betas, alphas, jnp.cumprod(alphas), times)


def respaced_betas(sde: VPSDE, times: Float[ArrayLike, " N"]) -> Float[Array, " N"]:
    r"""DDPM betas between consecutive times of the VP SDE: $1 - \alpha_{t_i}^2/\alpha_{t_{i-1}}^2$.

    For increasing `times` $t_1 < \dots < t_N$ and $t_0 = 0$, these are the betas of the
    discrete chain whose $\bar\alpha_i$ equals $\alpha_{t_i}^2$ exactly: DDPM "respaced" to the
    times (Nichol & Dhariwal 2021, Sec. 4). For a uniform grid of width $\Delta t$,
    $\beta_i = \beta(t_i)\Delta t + O(\Delta t^2)$, Song et al.'s discretization.

    References: Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML
    2021.
    """
    if not isinstance(sde, VPSDE):
        raise TypeError(
            "respaced_betas: `sde` must be a VPSDE (the betas discretize the VP SDE), got "
            f"{type(sde).__name__}. Pass a `neurde.diffusion.VPSDE`."
        )
    times = jnp.asarray(times)
    if times.ndim != 1 or times.shape[0] == 0:
        raise ValueError(
            f"respaced_betas: `times` must be a non-empty 1-D array, got shape {times.shape}."
        )
    if is_concrete(times):
        t = np.asarray(times)
        if not (np.all(np.diff(t) > 0) and t[0] > 0 and t[-1] <= 1):
            raise ValueError(
                "respaced_betas: `times` must be strictly increasing in (0, 1], got "
                f"{t!r}. Pass e.g. `jnp.linspace(1e-3, 1.0, 100)`."
            )
    integral = sde.beta_integral(times)
    previous = jnp.concatenate([jnp.zeros((1,), integral.dtype), integral[:-1]])
    return -jnp.expm1(-(integral - previous))


__all__ = ["DDPMSchedule", "ddpm_schedule", "respaced_betas"]
