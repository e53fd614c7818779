"""One optimization step, compiled: the building block of `fit` and of hand-written loops."""

from collections.abc import Callable
from typing import Any, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jaxtyping import Array, PRNGKeyArray, PyTree

from ..tolerances import trainable
from . import _checks
from ._sharded_step import per_device_loss, sharded_step
from .sharding import Sharding, as_sharding

LossFn: TypeAlias = Callable[[Any, Any, PRNGKeyArray], Any]
"""`loss(model, batch, key)` returning a scalar, or `(scalar, aux)` with `aux` a dict of
metrics (e.g. `{"nfe": ...}`) that `fit` records."""

Step: TypeAlias = Callable[
    [Any, optax.OptState, Any, PRNGKeyArray], tuple[Any, optax.OptState, Array, dict]
]


def init_optimizer(optim: optax.GradientTransformation, model: Any) -> optax.OptState:
    """Optimizer state for the trainable leaves of `model` (tolerances excluded).

    **Arguments:**

    - `optim`: an Optax transformation.
    - `model`: the model to train.

    **Returns:**

    `optim.init(eqx.filter(model, neurde.trainable(model)))`.
    """
    _checks.optimizer("init_optimizer", optim)
    return optim.init(eqx.filter(model, trainable(model)))


def _split_aux(out: Any) -> tuple[Array, dict]:
    loss, aux = out if isinstance(out, tuple) else (out, {})
    loss = jnp.asarray(loss)
    if loss.shape != ():
        raise ValueError(
            f"The loss must return a scalar (or a (scalar, aux) pair), got shape {loss.shape}. "
            "Reduce over the batch, e.g. with `jnp.mean`."
        )
    if not isinstance(aux, dict):
        raise TypeError(
            f"The loss's aux output must be a dict of metrics, got {type(aux).__name__}."
        )
    return loss, aux


def _loss_and_grads(
    loss_fn: LossFn, model: Any, batch: Any, key: PRNGKeyArray
) -> tuple[Array, dict, PyTree, PyTree]:
    params, static = eqx.partition(model, trainable(model))

    def loss_of(p: PyTree) -> tuple[Array, dict]:
        return _split_aux(loss_fn(eqx.combine(p, static), batch, key))

    (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    return loss, aux, params, grads


def step_once(
    loss_fn: LossFn,
    optim: optax.GradientTransformation,
    model: Any,
    opt_state: optax.OptState,
    batch: Any,
    key: PRNGKeyArray,
) -> tuple[Any, optax.OptState, Array, dict]:
    """One uncompiled step; `make_step` and `make_ensemble_step` compile it."""
    loss, aux, params, grads = _loss_and_grads(loss_fn, model, batch, key)
    updates, opt_state = optim.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    return model, opt_state, loss, aux


def step_once_checked(
    loss_fn: LossFn,
    optim: optax.GradientTransformation,
    model: Any,
    opt_state: optax.OptState,
    batch: Any,
    key: PRNGKeyArray,
) -> tuple[Any, optax.OptState, Array, dict, Array]:
    """`step_once`, plus whether each gradient leaf is finite (in the order of
    `gradient_paths(model)`): what `fit` needs to say which gradient failed."""
    loss, aux, params, grads = _loss_and_grads(loss_fn, model, batch, key)
    leaves = jax.tree.leaves(grads)
    finite = jnp.stack([jnp.all(jnp.isfinite(g)) for g in leaves]) if leaves else jnp.ones(0, bool)
    updates, opt_state = optim.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    return model, opt_state, loss, aux, finite


def gradient_paths(model: Any) -> list[str]:
    """The paths of the trainable leaves of `model`, e.g. `.field.mlp.layers[0].weight`."""
    params = eqx.filter(model, trainable(model))
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def make_step(
    loss_fn: LossFn,
    optim: optax.GradientTransformation,
    *,
    mesh: Sharding | Mesh | None = None,
) -> Step:
    """A jitted training step `step(model, opt_state, batch, key)`.

    The gradient is taken with respect to `neurde.trainable(model)` (every inexact array
    except solver tolerances) and applied with `optim`.

    **Arguments:**

    - `loss_fn`: `loss(model, batch, key) -> scalar` or `(scalar, aux_dict)`.
    - `optim`: an Optax transformation; initialize its state with
      `neurde.init_optimizer(optim, model)`.
    - `mesh`: train data parallel on a device mesh: a `neurde.Sharding` with a `data` axis,
      or a 1-D `jax.sharding.Mesh`. Each call splits the batch's leading axis over that axis
      and replicates the model and optimizer state (moving them if they are laid out
      otherwise); the loss is still the mean over the whole batch, so the step equals the
      unsharded one up to floating-point rounding. `None` (default): one device.

    **Returns:**

    `step(model, opt_state, batch, key) -> (model, opt_state, loss, aux)`, compiled once per
    model structure and batch shape.
    """

    _checks.function("make_step", "loss_fn", loss_fn, "loss(model, batch, key)")
    _checks.optimizer("make_step", optim)
    sharding = as_sharding("make_step", mesh, ensemble=False)

    def step(model, opt_state, batch, key):
        return step_once(per_device_loss(loss_fn, sharding), optim, model, opt_state, batch, key)

    if sharding is not None:
        return sharded_step(
            step, sharding, ensemble=False, batch_axis=None, owner="make_step: step"
        )
    return eqx.filter_jit(step)


__all__ = [
    "LossFn",
    "Step",
    "gradient_paths",
    "init_optimizer",
    "make_step",
    "step_once",
    "step_once_checked",
]
