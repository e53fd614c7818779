r"""What every sampler shares: the abstract class, the time grids and the checks.

A sampler is a frozen configuration (an `eqx.Module`: number of steps, `eps`, its own
hyperparameters). `sampler.run(score_fn, sde, x_T, args, key)` pushes a batch of prior
draws `x_T` (leading axis the batch) from $t = T$ down to the data and returns the samples
and the number of score evaluations (NFE). The fixed-step samplers run one `lax.scan`, so
they compile once whatever the number of steps; each step evaluates the score on the whole
batch (`jax.vmap` over examples), and one such batched evaluation counts as one NFE, the
convention of the diffusion literature. Use `neurde.diffusion.sample` rather than `run`.
"""

import abc
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..._types import Args
from ..forward import AbstractForwardSDE
from ..score import ScoreFn

TimeGrid: TypeAlias = Literal["uniform", "logsnr", "edm"]
TIME_GRIDS = ("uniform", "logsnr", "edm")
BatchedFn: TypeAlias = Callable[[Array, Array], Array]


class AbstractSampler(eqx.Module):
    """A reverse-time sampler of a score-based diffusion model."""

    @abc.abstractmethod
    def run(
        self,
        score_fn: ScoreFn,
        sde: AbstractForwardSDE,
        x_T: Float[Array, "batch ..."],
        args: Args,
        key: PRNGKeyArray | None,
    ) -> tuple[Float[Array, "batch ..."], Int[Array, ""]]:
        """Push the batch `x_T` from $t = T$ to the data; return `(samples, nfe)`."""


def check_steps(owner: str, steps: Any, name: str = "steps") -> int:
    """Raise `ValueError` unless `steps` is an integer >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"{owner}: `{name}` must be an integer >= 1, got {steps!r}. It sets the number "
            "of solver steps, and with it the number of score evaluations (NFE)."
        )
    return steps


def check_sampling_eps(owner: str, eps: Any) -> float:
    """Raise `ValueError` unless `0 < eps < 1`; return it as a float."""
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
        raise ValueError(
            f"{owner}: `eps` (the time sampling stops at) must be a float in (0, 1), got "
            f"{eps!r}. The score is singular at t = 0; Song et al. 2021 use eps=1e-3."
        )
    return float(eps)


def check_time_grid(owner: str, grid: Any) -> None:
    """Raise `ValueError` for an unknown time grid."""
    if grid not in TIME_GRIDS:
        raise ValueError(
            f"{owner}: unknown `time_grid={grid!r}`; choose 'uniform' (uniform in t), "
            "'logsnr' (uniform in log(alpha_t / sigma_t)) or 'edm' (Karras et al.'s "
            "sigma^(1/rho) spacing, rho = 7)."
        )


def require_key(owner: str, key: Any, why: str) -> PRNGKeyArray:
    """Return `key`, or raise `ValueError` saying why a key is needed."""
    if key is None:
        raise ValueError(
            f"{owner} is stochastic ({why}) and needs a key: pass `key=jr.key(0)` to "
            "`neurde.diffusion.sample`, or use a deterministic sampler."
        )
    return key


def time_grid(
    sde: AbstractForwardSDE,
    steps: int,
    kind: TimeGrid = "uniform",
    *,
    eps: float = 1e-3,
    rho: float = 7.0,
    dtype: Any = None,
) -> Float[Array, " steps_plus_1"]:
    r"""Decreasing times $T = t_0 > t_1 > \dots > t_N = \epsilon$ for $N$ = `steps`.

    - `"uniform"`: uniform in $t$ (Song et al. 2021; DDIM's "linear" skip).
    - `"logsnr"`: uniform in $\lambda_t = \log(\alpha_t/\sigma_t)$, DPM-Solver's default for
      low-resolution data (Lu et al. 2022, Sec. 3.3 and Appendix D.1).
    - `"edm"`: uniform in $\tilde\sigma^{1/\rho}$ with $\tilde\sigma_t = \sigma_t/\alpha_t =
      e^{-\lambda_t}$ (Karras et al. 2022, eq. 5), i.e. dense near the data.

    **Arguments:**

    - `sde`: the forward SDE.
    - `steps`: $N \ge 1$.
    - `kind`: the spacing.
    - `eps`: the last time.
    - `rho`: the exponent of `"edm"`.
    - `dtype`: the float dtype of the result.

    **Returns:**

    An array of `steps + 1` times.
    """
    check_steps("time_grid", steps)
    check_time_grid("time_grid", kind)
    eps = check_sampling_eps("time_grid", eps)
    dtype = jnp.result_type(float) if dtype is None else dtype
    frac = jnp.arange(steps + 1, dtype=dtype) / steps
    T = sde.T
    if kind == "uniform":
        return (T + (eps - T) * frac).at[-1].set(eps)
    lam_T, lam_eps = sde.log_snr(jnp.asarray(T, dtype)), sde.log_snr(jnp.asarray(eps, dtype))
    if kind == "logsnr":
        lams = lam_T + (lam_eps - lam_T) * frac
    else:
        sig_T, sig_eps = jnp.exp(-lam_T / rho), jnp.exp(-lam_eps / rho)
        lams = -rho * jnp.log(sig_T + (sig_eps - sig_T) * frac)
    ts = sde.time_from_log_snr(lams).astype(dtype)
    # Pin the ends: the inverse is exact in exact arithmetic only.
    return ts.at[0].set(T).at[-1].set(eps)


def bind_args(score_fn: ScoreFn, args: Args) -> BatchedFn:
    """The batched score with `args` bound: `fn(t, x_batch)`."""
    vmapped = jax.vmap(score_fn, in_axes=(None, 0, None))

    def fn(t: Array, x: Array) -> Array:
        return vmapped(t, x, args)

    return fn


def per_example(scalar: Array, x: Array) -> Array:
    """Broadcast a per-example vector of shape `(batch,)` against a batch `x`."""
    return scalar.reshape(scalar.shape + (1,) * (x.ndim - 1))


__all__ = [
    "AbstractSampler",
    "TimeGrid",
    "bind_args",
    "check_sampling_eps",
    "check_steps",
    "check_time_grid",
    "per_example",
    "require_key",
    "time_grid",
]
