"""`sample` and `sample_from`: the one entry point of every sampler."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ..._types import Args
from ..forward import AbstractForwardSDE
from ..score import ScoreFn, check_score_output
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
    check_score_output("sample_from", score_fn, jnp.asarray(sde.T, x_T.dtype), x_T[0], args)
    return sampler.run(score_fn, sde, x_T, args, key)


def _check(owner: str, sampler: Any, score_fn: Any, sde: Any) -> None:
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(
            f"{owner}: `sampler` must be a neurde.diffusion sampler (EulerMaruyama, Ancestral, "
            f"PredictorCorrector, ProbabilityFlow, DDIM, DPMSolver, EDMHeun), got "
            f"{type(sampler).__name__}."
        )
    if not isinstance(sde, AbstractForwardSDE):
        raise TypeError(
            f"{owner}: `sde` must be a forward SDE (VESDE, VPSDE, SubVPSDE), got "
            f"{type(sde).__name__}."
        )
    if not callable(score_fn):
        raise TypeError(
            f"{owner}: `score_fn` must be callable as score_fn(t, x, args) for one example, "
            f"got {type(score_fn).__name__}."
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
    x_T = jnp.asarray(x_T)
    if not jnp.issubdtype(x_T.dtype, jnp.floating):
        raise TypeError(f"{owner}: `x_T` must be floating, got dtype {x_T.dtype}.")
    if x_T.ndim < 2:
        raise ValueError(
            f"{owner}: `x_T` must be a batch (leading batch axis), got shape {x_T.shape}. For "
            "one example use `x_T[None]`."
        )
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
      `DDIM`, `DPMSolver` or `EDMHeun`.
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
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{owner}: `num_samples` must be an integer >= 1, got {num_samples!r}.")
    shape = tuple(shape)
    if not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(
            f"{owner}: `shape` is the shape of one example, a tuple of positive integers; got "
            f"{shape!r}."
        )
    prior_key, run_key = jr.split(key)
    dtype = jnp.result_type(float) if dtype is None else dtype
    x_T = sde.sample_prior(prior_key, (num_samples, *shape), dtype)
    return sample_from(sampler, score_fn, sde, x_T, args=args, key=run_key)


__all__ = ["sample", "sample_from"]
