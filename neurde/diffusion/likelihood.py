r"""Exact log-likelihoods of score-based models through the probability-flow ODE.

The probability-flow ODE $dx/dt = \tilde f(t, x) = f(t)x - \tfrac12 g(t)^2 s_\theta(t, x)$ is a
continuous normalizing flow, so (Chen et al. 2018, instantaneous change of variables;
Song et al. 2021, eq. 40)

$$\log p_\epsilon(x) = \log p_T(x_T) + \int_\epsilon^T \nabla\cdot\tilde f(t, x_t)\,dt,$$

solved forward from $x_\epsilon = x$ together with the integral. The divergence `estimator`
is the exact trace of the Jacobian (`"exact"`: $d$ Jacobian-vector products, one per basis
vector; small $d$) or Hutchinson's unbiased estimate
$\mathbb{E}_v[v^\top (\partial\tilde f/\partial x)\,v]$ (`"hutchinson"`) with Rademacher or
Gaussian probes $v$ drawn once per call and held fixed along the solve (FFJORD); one
Jacobian-vector product per probe.
"""

import math
from typing import Any, Literal, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._types import Args
from ..fields import AbstractField
from ..ode import NeuralODE
from ._checks import (
    check_choice,
    check_eps,
    check_floating,
    check_integer,
    check_key,
    check_positive,
    check_score_fn,
    check_tolerances,
)
from ._ode import solve_ode
from .forward import AbstractForwardSDE
from .score import ScoreFn, probability_flow_drift

ESTIMATORS = {"exact": "the trace, d Jacobian-vector products", "hutchinson": "random probes"}
PROBES = {"rademacher": "", "gaussian": ""}


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

    For data quantized into bins of width $w$ and dequantized uniformly (e.g. 8-bit images
    scaled to $[0, 1]$: $w = 1/256$; to $[-1, 1]$: $w = 2/256$), the discrete model's
    negative log-likelihood is at most $-\log p(x) - d\log w$ nats (Theis, van den Oord,
    Bethge 2016), so bits/dim $= (-\log p/d - \log w)/\log 2$: $+8$ for $[0, 1]$, $+7$ for
    $[-1, 1]$, the offset in Song et al.'s code.

    **Arguments:**

    - `logp`: log-density in nats.
    - `dim`: number of dimensions $d$.
    - `bin_width`: $w$, or `None` for continuous data.
    """
    check_integer("bits_per_dim", "dim", dim, fix="It is the number of dimensions of one example.")
    if bin_width is not None:
        check_positive(
            "bits_per_dim", "bin_width", bin_width, "e.g. 1/256 for 8-bit data in [0, 1]."
        )
    offset = 0.0 if bin_width is None else -math.log(bin_width)
    return (-jnp.asarray(logp) / dim + offset) / math.log(2)


class _WithDivergence(AbstractField):
    r"""The probability-flow ODE of one example with its divergence $\nabla\cdot\tilde f$.

    The state is `(x, delta)`; $v^\top J v$ for each probe $v$ comes from one
    Jacobian-vector product. With the basis vectors as probes their sum is the exact trace,
    with random probes their mean is Hutchinson's estimate.
    """

    sde: AbstractForwardSDE
    score_fn: ScoreFn
    probes: Array
    exact: bool = eqx.field(static=True)

    def __call__(self, t: Any, state: tuple[Array, Array], args: Args) -> tuple[Array, Array]:
        def drift(y: Array) -> Array:
            return probability_flow_drift(self.sde, self.score_fn, t, y, args)

        out, jvp = jax.vmap(lambda v: jax.jvp(drift, (state[0],), (v,)))(self.probes)
        quad = jnp.sum(self.probes * jvp, axis=tuple(range(1, self.probes.ndim)))
        return out[0], jnp.sum(quad) if self.exact else jnp.mean(quad)


def _probes(owner: str, x: Array, estimator: Any, probe: Any, num_probes: Any, key: Any) -> Array:
    check_choice(owner, "estimator", estimator, ESTIMATORS)
    if estimator == "exact":
        return jnp.eye(x.size, dtype=x.dtype).reshape(x.size, *x.shape)
    check_choice(owner, "probe", probe, PROBES)
    check_integer(owner, "num_probes", num_probes)
    why = "estimator='hutchinson' draws random probes"
    fix = "Pass e.g. `key=jr.key(0)`, or use estimator='exact' (deterministic; its cost grows "
    fix += "with the dimension)."
    key = check_key(owner, key, why, fix)
    draw = jr.rademacher if probe == "rademacher" else jr.normal
    return draw(key, (num_probes, *x.shape), x.dtype)


def log_likelihood(
    score_fn: ScoreFn,
    sde: AbstractForwardSDE,
    x: Float[ArrayLike, "*shape"],
    *,
    args: Args = None,
    estimator: Literal["exact", "hutchinson"] = "exact",
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    num_probes: int = 1,
    eps: float = 1e-5,
    rtol: Float[ArrayLike, ""] = 1e-5,
    atol: Float[ArrayLike, ""] = 1e-5,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 4096,
    bin_width: float | None = None,
    key: PRNGKeyArray | None = None,
) -> Likelihood:
    r"""$\log p_\epsilon(x)$ of ONE example under the probability-flow ODE (module docstring).

    Batch with `jax.vmap(lambda x: log_likelihood(score_fn, sde, x, ...))`. The ODE is
    solved by a `neurde.NeuralODE`, with its checks and its error when `max_steps` is reached.

    **Arguments:**

    - `score_fn`: `score_fn(t, x, args)` for one example.
    - `sde`: the forward SDE; its prior gives $\log p_T$.
    - `x`: one example (any shape; the divergence is over all its entries).
    - `args`: passed to `score_fn`.
    - `estimator`: how the divergence is computed: `"exact"` (default, the trace of the
      Jacobian) or `"hutchinson"` (its unbiased random estimate).
    - `probe`, `num_probes`: Hutchinson's probe distribution and count.
    - `eps`: the start time (default $10^{-5}$, Song et al.'s likelihood value).
    - `rtol`, `atol`: tolerances of the PID controller (default $10^{-5}$); arrays are
      accepted, so changing them under `jax.jit` does not recompile.
    - `solver`: default `diffrax.Tsit5()`.
    - `max_steps`: the most steps the solve may take.
    - `bin_width`: for `bits_per_dim` of quantized data (see `bits_per_dim`).
    - `key`: draws the Hutchinson probes (required for `estimator="hutchinson"`).

    **Returns:**

    A `Likelihood(logp, bits_per_dim, nfe)`.

    References: Song et al. 2021, Sec. 4.3 and Appendix D.2; Chen et al., NeurIPS 2018;
    Grathwohl et al., "FFJORD", ICLR 2019; Hutchinson, "A Stochastic Estimator of the Trace
    of the Influence Matrix", 1989.
    """
    owner = "log_likelihood"
    eps = check_eps(owner, eps)
    rtol, atol = check_tolerances(owner, rtol, atol)
    fix = "It bounds the solver's steps; raise it, or loosen `rtol` and `atol`."
    max_steps = check_integer(owner, "max_steps", max_steps, fix=fix)
    x = check_floating(owner, "x", x)
    if bin_width is not None:  # checked before the solve, not after it
        check_positive(owner, "bin_width", bin_width, "e.g. 1/256 for 8-bit data in [0, 1].")
    check_score_fn(owner, score_fn, jnp.asarray(eps, x.dtype), x, args, sde=sde)
    probes = _probes(owner, x, estimator, probe, num_probes, key)
    field = _WithDivergence(sde, score_fn, probes, estimator == "exact")
    ode = NeuralODE(
        field, solver=solver, rtol=rtol, atol=atol, t0=eps, t1=sde.T, max_steps=max_steps
    )
    (x_T, delta), nfe = solve_ode("log_likelihood", ode, (x, jnp.zeros((), x.dtype)), args)
    logp = sde.prior_logp(x_T) + delta
    return Likelihood(logp, bits_per_dim(logp, x.size, bin_width), nfe)


__all__ = ["Likelihood", "bits_per_dim", "log_likelihood"]
