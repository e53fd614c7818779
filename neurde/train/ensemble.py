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
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import Array, PRNGKeyArray, PyTree

from ..data._checks import prng_key
from . import _checks
from ._sharded_step import sharded_step
from .sharding import Sharding, as_sharding
from .step import LossFn, Step, init_optimizer, step_once, step_once_checked


def make_ensemble(make_model: Callable[[PRNGKeyArray], Any], n: int, *, key: PRNGKeyArray) -> Any:
    """Build `n` independently initialized models as one stacked module.

    **Arguments:**

    - `make_model`: `key -> model`, e.g. `lambda k: NeuralODE(MLPField(2, key=k), t1=1.0)`.
    - `n`: number of members (>= 1).
    - `key`: split into one key per member.

    **Returns:**

    A module of the same type whose arrays have a leading axis of size `n`.
    """
    _checks.function("make_ensemble", "make_model", make_model, "key -> model")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"make_ensemble: `n` must be an integer >= 1, got {n!r}.")
    prng_key("make_ensemble", key)
    return eqx.filter_vmap(make_model)(jr.split(key, n))


def stacked_size(fn: str, name: str, ensemble: Any, fix: str) -> int:
    """The member count of a stacked ensemble, or a `ValueError` naming `fn` and `name`."""
    shapes = [np.shape(x) for x in jax.tree.leaves(ensemble) if eqx.is_array(x)]
    if not shapes:
        raise ValueError(f"{fn}: `{name}` has no arrays to read a member count from. {fix}")
    if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(
            f"{fn}: `{name}` is not a stacked ensemble: its arrays do not share a leading "
            f"member axis (shapes {shapes[:6]}{' ...' if len(shapes) > 6 else ''}). {fix}"
        )
    return shapes[0][0]


_STACK_FIX = "Build ensembles with `neurde.make_ensemble(make_model, n, key=key)`."


def ensemble_size(ensemble: Any) -> int:
    """Number of members: the leading axis of the ensemble's arrays."""
    return stacked_size("ensemble_size", "ensemble", ensemble, _STACK_FIX)


def ensemble_member(ensemble: Any, i: int) -> Any:
    """The `i`-th member as an ordinary model (`0 <= i < n`; negative `i` counts back)."""
    n = stacked_size("ensemble_member", "ensemble", ensemble, _STACK_FIX)
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
        raise ValueError(
            f"ensemble_member: `i` must be an integer in [-{n}, {n}) for an ensemble of {n} "
            f"members, got {i!r}."
        )
    return jax.tree.map(lambda x: x[i] if eqx.is_array(x) else x, ensemble)


def ensemble_init_optimizer(optim: optax.GradientTransformation, ensemble: Any) -> Any:
    """One optimizer state per member, stacked like the ensemble."""
    _checks.optimizer("ensemble_init_optimizer", optim)
    stacked_size("ensemble_init_optimizer", "ensemble", ensemble, _STACK_FIX)
    return eqx.filter_vmap(lambda m: init_optimizer(optim, m))(ensemble)


def make_ensemble_step(
    loss_fn: LossFn,
    optim: optax.GradientTransformation,
    *,
    batch_axis: int | None = None,
    mesh: Sharding | Mesh | None = None,
) -> Step:
    """A jitted step training every member of an ensemble at once.

    **Arguments:**

    - `loss_fn`, `optim`: as for `make_step`.
    - `batch_axis`: `None` (default) gives every member the same batch; `0` gives member `i`
      the batch `batch[i]` (a leading member axis).
    - `mesh`: train on a device mesh: a `neurde.Sharding` whose `members` axis splits the
      members (each device trains its own, with their optimizer states) and whose `data`
      axis splits each batch's examples (axis 0 of a shared batch, axis 1 of per-member
      batches); a 1-D `jax.sharding.Mesh` splits the members. The result equals the
      unsharded step up to floating-point rounding. `None` (default): one device.

    **Returns:**

    `step(ensemble, opt_states, batch, key) -> (ensemble, opt_states, losses, aux)`, with
    `losses` of shape `(n,)`. `key` is split into one key per member.
    """

    _checks.function("make_ensemble_step", "loss_fn", loss_fn, "loss(model, batch, key)")
    _checks.optimizer("make_ensemble_step", optim)
    if batch_axis is not None and (isinstance(batch_axis, bool) or not isinstance(batch_axis, int)):
        raise TypeError(
            f"make_ensemble_step: `batch_axis` must be None (one batch for every member) or an "
            f"integer axis of per-member batches, got {batch_axis!r}."
        )

    sharding = as_sharding("make_ensemble_step", mesh, ensemble=True)

    def member_step(model, opt_state, batch, key):
        return step_once(loss_fn, optim, model, opt_state, batch, key)

    return _vmapped_step(member_step, batch_axis, sharding)


def make_checked_ensemble_step(
    loss_fn: LossFn, optim: optax.GradientTransformation, sharding: Sharding | None = None
) -> Any:
    """`make_ensemble_step`, also returning per member which gradient leaves are finite."""

    def member_step(model, opt_state, batch, key):
        return step_once_checked(loss_fn, optim, model, opt_state, batch, key)

    return _vmapped_step(member_step, None, sharding, owner="fit")


def _vmapped_step(
    member_step: Callable,
    batch_axis: int | None,
    sharding: Sharding | None,
    owner: str = "make_ensemble_step: step",
) -> Any:
    # `eqx.if_array(0)`: map the arrays only; functions and flags in the model are shared.
    member_axes = eqx.if_array(0)
    batch_axes = None if batch_axis is None else eqx.if_array(batch_axis)
    vstep = eqx.filter_vmap(
        member_step, in_axes=(member_axes, member_axes, batch_axes, member_axes)
    )

    def step(ensemble, opt_states, batch, key):
        # Checked at trace time, so that a wrong member count is not a vmap error about
        # internal arguments.
        fn = "make_ensemble_step: step"
        n = stacked_size(fn, "ensemble", ensemble, _STACK_FIX)
        fix = "Initialize it with `neurde.ensemble_init_optimizer(optim, ensemble)`."
        _checks.member_axis(fn, "opt_states", opt_states, n, 0, fix)
        if batch_axis is not None:
            fix = f"Stack one batch per member along axis {batch_axis}."
            _checks.member_axis(fn, "batch", batch, n, batch_axis, fix)
        keys = jr.split(key, n)
        return vstep(ensemble, opt_states, batch, keys)

    if sharding is not None:
        return sharded_step(step, sharding, ensemble=True, batch_axis=batch_axis, owner=owner)
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
    _checks.function("ensemble_predict", "fn", fn, "fn(member, x)", optional=True)
    stacked_size("ensemble_predict", "ensemble", ensemble, _STACK_FIX)
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
    "make_checked_ensemble_step",
    "make_ensemble",
    "make_ensemble_step",
    "stacked_size",
]
