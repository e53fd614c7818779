"""Ensembles as one stacked module: built, trained and evaluated with `vmap`.

An ensemble of N models is a single module whose array leaves carry a leading axis of size
N, as `eqx.filter_vmap` over N keys produces. Training vmaps the whole step — loss, gradient
and optimizer update — so N members train in one compiled call, each with its own key and
optimizer state, and results equal a Python loop over the members.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from .step import LossFn, Step, init_optimizer, step_once


def make_ensemble(make_model: Callable[[PRNGKeyArray], Any], n: int, *, key: PRNGKeyArray) -> Any:
    """Build `n` independently initialized models as one stacked module.

    **Arguments:**

    - `make_model`: `key -> model`, e.g. `lambda k: NeuralODE(MLPField(2, key=k), t1=1.0)`.
    - `n`: number of members (>= 1).
    - `key`: split into one key per member.

    **Returns:**

    A module of the same type whose arrays have a leading axis of size `n`.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"make_ensemble: `n` must be an integer >= 1, got {n!r}.")
    return eqx.filter_vmap(make_model)(jr.split(key, n))


def ensemble_size(ensemble: Any) -> int:
    """Number of members: the leading axis of the ensemble's arrays."""
    leaves = [x for x in jax.tree.leaves(ensemble) if eqx.is_array(x)]
    if not leaves:
        raise ValueError("ensemble_size: the ensemble has no arrays to read a size from.")
    return leaves[0].shape[0]


def ensemble_member(ensemble: Any, i: int) -> Any:
    """The `i`-th member as an ordinary model."""
    return jax.tree.map(lambda x: x[i] if eqx.is_array(x) else x, ensemble)


def ensemble_init_optimizer(optim: optax.GradientTransformation, ensemble: Any) -> Any:
    """One optimizer state per member, stacked like the ensemble."""
    return eqx.filter_vmap(lambda m: init_optimizer(optim, m))(ensemble)


def make_ensemble_step(
    loss_fn: LossFn, optim: optax.GradientTransformation, *, batch_axis: int | None = None
) -> Step:
    """A jitted step training every member of an ensemble at once.

    **Arguments:**

    - `loss_fn`, `optim`: as for `make_step`.
    - `batch_axis`: `None` (default) gives every member the same batch; `0` gives member `i`
      the batch `batch[i]` (a leading member axis).

    **Returns:**

    `step(ensemble, opt_states, batch, key) -> (ensemble, opt_states, losses, aux)`, with
    `losses` of shape `(n,)`. `key` is split into one key per member.
    """

    def member_step(model, opt_state, batch, key):
        return step_once(loss_fn, optim, model, opt_state, batch, key)

    # `eqx.if_array(0)`: map the arrays only; functions and flags in the model are shared.
    member_axes = eqx.if_array(0)
    batch_axes = None if batch_axis is None else eqx.if_array(batch_axis)
    vstep = eqx.filter_vmap(
        member_step, in_axes=(member_axes, member_axes, batch_axes, member_axes)
    )

    def step(ensemble, opt_states, batch, key):
        keys = jr.split(key, ensemble_size(ensemble))
        return vstep(ensemble, opt_states, batch, keys)

    return eqx.filter_jit(step)


def ensemble_predict(
    ensemble: Any,
    x: PyTree[Array],
    fn: Callable[[Any, PyTree[Array]], PyTree[Array]] | None = None,
) -> tuple[PyTree[Array], PyTree[Array]]:
    """Mean and standard deviation over members of `fn(member, x)` (default `member(x)`).

    **Arguments:**

    - `ensemble`: a stacked ensemble.
    - `x`: one input, shared by every member (vmap this function for a batch).
    - `fn`: how a member maps the input to a prediction.

    **Returns:**

    `(mean, std)` over the member axis, each with the structure of one prediction.
    """
    apply = (lambda m, x: m(x)) if fn is None else fn
    preds = eqx.filter_vmap(apply, in_axes=(eqx.if_array(0), None))(ensemble, x)
    mean = jax.tree.map(lambda p: jnp.mean(p, axis=0), preds)
    std = jax.tree.map(lambda p: jnp.std(p, axis=0), preds)
    return mean, std


__all__ = [
    "ensemble_init_optimizer",
    "ensemble_member",
    "ensemble_predict",
    "ensemble_size",
    "make_ensemble",
    "make_ensemble_step",
]
