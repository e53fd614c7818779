"""`sample` and `sample_from`: the one entry point of every sampler."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ..._types import Args
from .._checks import check_batch, check_floating, check_integer, check_score_fn, check_sde
from ..forward import AbstractForwardSDE
from ..score import ScoreFn
from .base import AbstractSampler


@eqx.filter_jit
def _run(
    sampler: AbstractSampler,
    score_fn: ScoreFn,
    sde: AbstractForwardSDE,
    x_T: Array,
    args: Args,
    key: Any,
) -> tuple[Array, Array]:
    # Checked while tracing, so a compiled call pays nothing for it.
    check_score_fn("sample_from", score_fn, jnp.asarray(sde.T, x_T.dtype), x_T[0], args, sde=sde)
    return sampler.run(score_fn, sde, x_T, args, key)


def _check(owner: str, sampler: Any, score_fn: Any, sde: Any) -> None:
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(
            f"{owner}: `sampler` must be a neurde.diffusion sampler, got "
            f"{type(sampler).__name__}. Build one, e.g. `neurde.diffusion.DPMSolver(10)`: "
            "EulerMaruyama, Ancestral, PredictorCorrector, ProbabilityFlow, DDIM, DPMSolver, "
            "DPMSolverMultistep or EDMHeun."
        )
    check_sde(owner, sde)
    if not callable(score_fn):
        raise TypeError(
            f"{owner}: `score_fn` must be callable as score_fn(t, x, args) for one example, "
            f"got {type(score_fn).__name__}. Wrap a network with "
            "`neurde.diffusion.Score(model, sde, parameterization)`."
        )


def sample_from(
    sampler: AbstractSampler,
    score_fn: ScoreFn,
    sde: AbstractForwardSDE,
    x_T: Float[ArrayLike, "batch ..."],
    *,
    args: Args = None,
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "batch ..."], Int[Array, ""]]:
    """Push given prior draws `x_T` through a sampler (e.g. fixed noise, to compare samplers).

    **Arguments:**

    - `sampler`: the sampler configuration.
    - `score_fn`: `score_fn(t, x, args)` for ONE example (wrap a network with
      `neurde.diffusion.Score`); it is vmapped over the batch.
    - `sde`: the forward SDE the score belongs to.
    - `x_T`: a batch of states at $t = T$, leading axis the batch.
    - `args`: passed to `score_fn`.
    - `key`: randomness of stochastic samplers; deterministic ones ignore it.

    **Returns:**

    `(samples, nfe)`: the batch at the sampler's final time, and the number of (batched)
    score evaluations it made. Compiled once per sampler configuration, score function
    and batch shape.
    """
    owner = "sample_from"
    _check(owner, sampler, score_fn, sde)
    x_T = check_floating(owner, "x_T", x_T)
    check_batch(owner, "x_T", x_T, "For one example use `x_T[None]`.")
    return _run(sampler, score_fn, sde, x_T, args, key)


def sample(
    sampler: AbstractSampler,
    score_fn: ScoreFn,
    sde: AbstractForwardSDE,
    num_samples: int,
    shape: tuple[int, ...],
    *,
    args: Args = None,
    dtype: Any = None,
    key: PRNGKeyArray,
) -> tuple[Float[Array, "num_samples ..."], Int[Array, ""]]:
    """Draw `num_samples` samples of shape `shape` from a score-based model.

    The batch starts from the SDE's prior (`sde.sample_prior`) and runs through `sampler`.

    **Arguments:**

    - `sampler`: `EulerMaruyama`, `Ancestral`, `PredictorCorrector`, `ProbabilityFlow`,
      `DDIM`, `DPMSolver`, `DPMSolverMultistep` or `EDMHeun`.
    - `score_fn`: `score_fn(t, x, args)` for ONE example of shape `shape`.
    - `sde`: the forward SDE.
    - `num_samples`: the batch size.
    - `shape`: the shape of one example.
    - `args`: passed to `score_fn`.
    - `dtype`: the float dtype (default JAX's default float).
    - `key`: randomness for the prior draw and stochastic samplers.

    **Returns:**

    `(samples, nfe)`, as `sample_from`.
    """
    owner = "sample"
    _check(owner, sampler, score_fn, sde)
    check_integer(owner, "num_samples", num_samples, fix="It is the batch size.")
    shape = tuple(shape)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(
            f"{owner}: `shape` must be a tuple of positive integers, the shape of one example, "
            f"got {shape!r}. For vectors of size d pass `(d,)`."
        )
    prior_key, run_key = jr.split(key)
    dtype = jnp.result_type(float) if dtype is None else dtype
    x_T = sde.sample_prior(prior_key, (num_samples, *shape), dtype)
    return sample_from(sampler, score_fn, sde, x_T, args=args, key=run_key)


__all__ = ["sample", "sample_from"]
