r"""Exact log-likelihoods of score-based models through the probability-flow ODE.

The probability-flow ODE $dx/dt = \tilde f(t, x) = f(t)x - \tfrac12 g(t)^2 s_\theta(t, x)$ is a
continuous normalizing flow, so (Chen et al. 2018, instantaneous change of variables;
Song et al. 2021, eq. 40)

$$\log p_\epsilon(x) = \log p_T(x_T) + \int_\epsilon^T \nabla\cdot\tilde f(t, x_t)\,dt,$$

solved forward from $x_\epsilon = x$ together with the integral. The divergence is the exact
trace of the Jacobian ($d$ Jacobian-vector products, one per basis vector; small $d$) or
Hutchinson's unbiased estimate $\mathbb{E}_v[v^\top (\partial\tilde f/\partial x)\,v]$ with
Rademacher or Gaussian probes $v$ drawn once per call and held fixed along the solve
(FFJORD); one Jacobian-vector product per probe.
"""

import math
from typing import Any, Literal, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._types import Args
from ..stats import solver_stats
from .forward import AbstractForwardSDE
from .score import ScoreFn, check_score_output
from .time_sampling import check_eps


class Likelihood(NamedTuple):
    """The log-likelihood of one example.

    - `logp`: $\\log p_\\epsilon(x)$ in nats.
    - `bits_per_dim`: $(-\\log p / d - \\log w) / \\log 2$ with $d$ = `x.size` and $w$ the
      `bin_width` (1 when not given).
    - `nfe`: evaluations of the augmented vector field (each one score evaluation plus its
      divergence).
    """

    logp: Float[Array, ""]
    bits_per_dim: Float[Array, ""]
    nfe: Int[Array, ""]


def bits_per_dim(
    logp: Float[ArrayLike, "..."], dim: int, bin_width: float | None = None
) -> Float[Array, "..."]:
    r"""Convert a log-density in nats to bits per dimension.

    For data quantised into bins of width $w$ and dequantised uniformly (e.g. 8-bit images
    scaled to $[0, 1]$: $w = 1/256$; to $[-1, 1]$: $w = 2/256$), the discrete model's
    negative log-likelihood is at most $-\log p(x) - d\log w$ nats (Theis, van den Oord,
    Bethge 2016), so bits/dim $= (-\log p/d - \log w)/\log 2$: $+8$ for $[0, 1]$, $+7$ for
    $[-1, 1]$, the offset in Song et al.'s code.

    **Arguments:**

    - `logp`: log-density in nats.
    - `dim`: number of dimensions $d$.
    - `bin_width`: $w$, or `None` for continuous data.
    """
    offset = 0.0 if bin_width is None else -math.log(bin_width)
    return (-jnp.asarray(logp) / dim + offset) / math.log(2)


def _with_divergence(field: Any, probes: Array, exact: bool) -> Any:
    # v^T J v for each probe v by one Jacobian-vector product; with the basis vectors as
    # probes the sum is the exact trace, with random probes the mean is Hutchinson's estimate.
    axes = tuple(range(1, probes.ndim))

    def fn(t: Any, x: Array) -> tuple[Array, Array]:
        out, jvp = jax.vmap(lambda v: jax.jvp(lambda y: field(t, y), (x,), (v,)))(probes)
        quad = jnp.sum(probes * jvp, axis=axes)
        return out[0], jnp.sum(quad) if exact else jnp.mean(quad)

    return fn


def log_likelihood(
    score_fn: ScoreFn,
    sde: AbstractForwardSDE,
    x: Float[ArrayLike, "*shape"],
    *,
    args: Args = None,
    trace: Literal["exact", "hutchinson"] = "exact",
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    num_probes: int = 1,
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 4096,
    bin_width: float | None = None,
    key: PRNGKeyArray | None = None,
) -> Likelihood:
    r"""$\log p_\epsilon(x)$ of ONE example under the probability-flow ODE (module docstring).

    Batch with `jax.vmap(lambda x: log_likelihood(score_fn, sde, x, ...))`.

    **Arguments:**

    - `score_fn`: `score_fn(t, x, args)` for one example.
    - `sde`: the forward SDE; its prior gives $\log p_T$.
    - `x`: one example (any shape; the divergence is over all its entries).
    - `args`: passed to `score_fn`.
    - `trace`: `"exact"` (default) or `"hutchinson"`.
    - `probe`, `num_probes`: Hutchinson's probe distribution and count.
    - `eps`: the start time (default $10^{-5}$, Song et al.'s likelihood value).
    - `rtol`, `atol`: tolerances of the PID controller (default $10^{-5}$).
    - `solver`: default `diffrax.Tsit5()`.
    - `max_steps`: Diffrax's step limit.
    - `bin_width`: for `bits_per_dim` of quantised data (see `bits_per_dim`).
    - `key`: draws the Hutchinson probes (required for `trace="hutchinson"`).

    **Returns:**

    A `Likelihood(logp, bits_per_dim, nfe)`.

    References: Song et al. 2021, Sec. 4.3 and Appendix D.2; Chen et al., NeurIPS 2018;
    Grathwohl et al., "FFJORD", ICLR 2019; Hutchinson, "A Stochastic Estimator of the Trace
    of the Influence Matrix", 1989.
    """
    owner = "log_likelihood"
    check_eps(owner, eps)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not float(value) > 0:
            raise ValueError(f"{owner}: `{name}` must be > 0, got {value!r}.")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{owner}: `x` must be floating, got dtype {x.dtype}.")
    check_score_output(owner, score_fn, jnp.asarray(eps, x.dtype), x, args)
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"{owner}: unknown `trace={trace!r}`; choose 'exact' or 'hutchinson'.")
    if trace == "exact":
        probes = jnp.eye(x.size, dtype=x.dtype).reshape(x.size, *x.shape)
    else:
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(
                f"{owner}: unknown `probe={probe!r}`; choose 'rademacher' or 'gaussian'."
            )
        if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
            raise ValueError(f"{owner}: `num_probes` must be an integer >= 1, got {num_probes!r}.")
        if key is None:
            raise ValueError(
                f"{owner}: trace='hutchinson' draws random probes and needs `key=`; or use "
                "trace='exact' (deterministic, cost grows with the dimension)."
            )
        shape = (num_probes, *x.shape)
        if probe == "rademacher":
            probes = jr.rademacher(key, shape, x.dtype)
        else:
            probes = jr.normal(key, shape, x.dtype)

    def field(t: Any, y: Array) -> Array:
        return sde.drift_coeff(t) * y - 0.5 * sde.diffusion(t) ** 2 * score_fn(t, y, args)

    with_divergence = _with_divergence(field, probes, trace == "exact")

    def augmented(t: Any, state: tuple[Array, Array], _: Any) -> tuple[Array, Array]:
        return with_divergence(t, state[0])

    solver = diffrax.Tsit5() if solver is None else solver
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(augmented),
        solver,
        t0=jnp.asarray(eps, x.dtype),
        t1=jnp.asarray(sde.T, x.dtype),
        dt0=None,
        y0=(x, jnp.zeros((), x.dtype)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    ys: Any = solution.ys
    x_T, delta = ys[0][0], ys[1][0]
    logp = sde.prior_logp(x_T) + delta
    nfe = solver_stats(solution, solver)["nfe"]
    return Likelihood(logp, bits_per_dim(logp, x.size, bin_width), nfe)


__all__ = ["Likelihood", "bits_per_dim", "log_likelihood"]
