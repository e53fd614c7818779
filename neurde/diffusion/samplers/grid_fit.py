r"""`fit_time_grid`: learn a sampler's time grid for its NFE budget (LD3 / Align Your Steps).

A deterministic fixed-step sampler is a differentiable function of its grid (one
`lax.scan` over times computed from the grid), so the grid can be fitted by gradient
descent: push fixed prior draws through the sampler and through a fine-step reference, and
minimize the distance between the two outputs over the grid's positions.
"""

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ..._types import Args
from .._checks import check_integer, check_positive, check_sde
from ..forward import AbstractForwardSDE
from ..score import ScoreFn
from ._fixed_grid import AbstractFixedGridSampler
from .base import AbstractSampler
from .grids import OptimizedGrid
from .probability_flow import ProbabilityFlow
from .sample import sample_from

_OWNER = "fit_time_grid"


class GridFit(eqx.Module):
    """What `fit_time_grid` returns.

    **Fields:**

    - `sampler`: the sampler with the fitted `OptimizedGrid` as its `time_grid` (the initial
      grid if fitting did not lower the loss on the fitting draws).
    - `losses`: the loss of each iteration's batch.
    - `initial_loss`, `final_loss`: the loss on all fitting draws before and after.
    """

    sampler: AbstractFixedGridSampler
    losses: Float[Array, " iterations"]
    initial_loss: Float[Array, ""]
    final_loss: Float[Array, ""]


def _check_sampler(sampler: Any) -> None:
    fields = {}
    if isinstance(sampler, AbstractFixedGridSampler):
        fields = {f.name: f for f in dataclasses.fields(sampler)}
    if "time_grid" not in fields:
        raise TypeError(
            f"{_OWNER}: `sampler` must be a fixed-step sampler with a `time_grid` (DDIM, "
            f"DPMSolver, DPMSolverMultistep, ...), got {type(sampler).__name__}."
        )
    if fields["time_grid"].metadata.get("static", False):
        # A static field cannot hold the grid's array, nor be replaced by `eqx.tree_at`.
        raise TypeError(
            f"{_OWNER}: {type(sampler).__name__} declares `time_grid` static, so its grid "
            "cannot be fitted. Declare it `time_grid: TimeGrid` (not static), as DDIM does."
        )
    why = sampler.randomness()
    if why is not None:
        raise ValueError(
            f"{_OWNER}: `sampler` must be deterministic, got {type(sampler).__name__} ({why}): "
            "its output from given noise is not a function of the grid alone. Fit the grid "
            "of a deterministic sampler (e.g. DDIM with eta=0, DPMSolverMultistep)."
        )


@eqx.filter_jit
def _fit(
    sampler: AbstractFixedGridSampler,
    score_fn: ScoreFn,
    sde: AbstractForwardSDE,
    x_T: Array,
    targets: Array,
    args: Args,
    iterations: int,
    learning_rate: float,
    decouple: bool,
) -> tuple[OptimizedGrid, Array, Array, Array]:
    optim = optax.adam(learning_rate)
    start: OptimizedGrid = sampler.time_grid  # pyright: ignore[reportAttributeAccessIssue]

    def as_grid(params: Any) -> OptimizedGrid:
        # Fitted: the logits, and the shifts with `decouple`; others stay as they are.
        return OptimizedGrid(*params) if decouple else OptimizedGrid(params, start.shifts)

    def loss(params: Any, x: Array, y: Array) -> Array:
        candidate = eqx.tree_at(lambda s: s.time_grid, sampler, as_grid(params))
        out, _ = candidate.run(score_fn, sde, x, args, None)
        return jnp.mean(jnp.sum((out - y).reshape(x.shape[0], -1) ** 2, axis=1))

    def body(carry: Any, i: Array) -> tuple[Any, Array]:
        params, state = carry
        j = i % x_T.shape[0]
        value, grad = jax.value_and_grad(loss)(params, x_T[j], targets[j])
        updates, state = optim.update(grad, state)
        return (optax.apply_updates(params, updates), state), value

    init = (start.logits, start.shifts) if decouple else start.logits
    (params, _), losses = jax.lax.scan(body, (init, optim.init(init)), jnp.arange(iterations))  # pyright: ignore[reportArgumentType]

    def total(params: Any) -> Array:
        return jnp.mean(jax.vmap(loss, in_axes=(None, 0, 0))(params, x_T, targets))

    return as_grid(params), losses, total(init), total(params)


def fit_time_grid(
    sampler: AbstractFixedGridSampler,
    score_fn: ScoreFn,
    sde: AbstractForwardSDE,
    shape: tuple[int, ...],
    *,
    key: PRNGKeyArray,
    reference: AbstractSampler | None = None,
    batches: int = 4,
    batch_size: int = 64,
    iterations: int = 200,
    learning_rate: float = 0.05,
    decouple: bool = False,
    args: Args = None,
    dtype: Any = None,
) -> GridFit:
    r"""Fit the time grid of a deterministic sampler to a fine-step reference.

    Draws `batches` batches of prior noise $x_T$, solves each with `reference` (default: the
    adaptive probability-flow ODE, `ProbabilityFlow(rtol=1e-5, atol=1e-5)` down to the
    sampler's `eps`), and minimizes

    $$L(\ell) = \frac1B\sum_b \lVert \Phi_\ell(x_T^{(b)}) - \Phi_\text{ref}(x_T^{(b)})\rVert^2$$

    over the logits $\ell$ of an `OptimizedGrid` (log-SNR increments through a softmax, so
    every iterate is a valid grid), with Adam, one batch per iteration in turn, by
    differentiating through the sampler (its whole run is one `lax.scan`). It starts from
    the sampler's own grid (`OptimizedGrid.from_grid`), so it refines the best fixed grid
    one picks; if the fitted grid does not lower $L$ on all fitting draws, the initial one
    is returned. This is LD3's objective (Tong et al. 2025) without its slack term, and the
    spirit of Align Your Steps (Sabour et al. 2024), which fits the grid to a bound on the
    KL divergence of the discretized process. With `decouple=True` the grid's `shifts`
    $\delta$ (where the model is queried, $s_i = t_i e^{\delta_i}$: see `OptimizedGrid`)
    are fitted jointly with $\ell$, from the grid's own shifts or zero, LD3's decoupled
    times; the fitted grid then holds `shifts`. A grid is fitted for one NFE budget, SDE and
    score; the cost is `iterations` sampler runs and their gradients, once.

    **Arguments:**

    - `sampler`: a deterministic fixed-step sampler with a `time_grid` (e.g.
      `DPMSolverMultistep(5)`); its grid is the starting point.
    - `score_fn`: `score_fn(t, x, args)` for one example.
    - `sde`: the forward SDE.
    - `shape`: the shape of one example.
    - `key`: for the prior draws.
    - `reference`: a sampler from the same noise to the same final time (default above).
    - `batches`, `batch_size`: the fitting draws (LD3 uses about 100 samples).
    - `iterations`: optimizer steps (default 200).
    - `learning_rate`: Adam's (default 0.05).
    - `decouple`: also fit where the model is queried (`OptimizedGrid.shifts`); default
      False, which keeps the grid's shifts (None for a grid built here) fixed.
    - `args`: passed to `score_fn`.
    - `dtype`: of the prior draws (default JAX's default float).

    **Returns:**

    A `GridFit`; `fit.sampler` is the sampler with the fitted grid, ready for
    `neurde.diffusion.sample` and for `neurde.save`.

    References: Tong, Yang, Zhang, Ming, Liu, "Learning to Discretize Denoising Diffusion
    ODEs", ICLR 2025; Sabour, Fidler, Kreis, "Align Your Steps: Optimizing Sampling
    Schedules in Diffusion Models", ICML 2024.
    """
    _check_sampler(sampler)
    check_sde(_OWNER, sde)
    for name, value in (("batches", batches), ("batch_size", batch_size),
                        ("iterations", iterations)):  # fmt: skip
        check_integer(_OWNER, name, value)
    check_positive(_OWNER, "learning_rate", learning_rate, "Try 0.05.")
    if not isinstance(decouple, bool):
        raise TypeError(f"{_OWNER}: `decouple` must be True or False, got {decouple!r}.")
    grid = sampler.time_grid  # pyright: ignore[reportAttributeAccessIssue]
    if not isinstance(grid, OptimizedGrid):
        grid = OptimizedGrid.from_grid(grid, sde, sampler.steps, eps=sampler.eps)  # pyright: ignore[reportAttributeAccessIssue]
    if decouple and grid.shifts is None:
        grid = OptimizedGrid(grid.logits, jnp.zeros(grid.steps + 1, grid.logits.dtype))
    sampler = eqx.tree_at(lambda s: s.time_grid, sampler, grid)  # pyright: ignore[reportAttributeAccessIssue]
    if reference is None:
        reference = ProbabilityFlow(rtol=1e-5, atol=1e-5, eps=sampler.eps)  # pyright: ignore[reportAttributeAccessIssue]
    dtype = jnp.result_type(float) if dtype is None else dtype
    x_T = sde.sample_prior(key, (batches * batch_size, *shape), dtype)
    targets, _ = sample_from(reference, score_fn, sde, x_T, args=args)
    split = (batches, batch_size, *shape)
    fitted_grid, losses, initial, final = _fit(
        sampler, score_fn, sde, x_T.reshape(split), targets.reshape(split), args, iterations,
        learning_rate, decouple,
    )  # fmt: skip
    if not bool(final < initial):
        fitted_grid, final = grid, initial
    fitted = eqx.tree_at(lambda s: s.time_grid, sampler, fitted_grid)  # pyright: ignore[reportAttributeAccessIssue]
    return GridFit(fitted, losses, initial, final)


__all__ = ["GridFit", "fit_time_grid"]
