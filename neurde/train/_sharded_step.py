"""The training step on a device mesh: one `jax.jit` program whose inputs are moved to
their layout before each call and whose outputs are constrained to it, so that every step
after the first reuses the compiled program."""

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array

from ..tolerances import trainable
from .sharding import Sharding, check_batch, check_members, leading_size, put, put_member_tree


def constrain(tree: Any, sharding: NamedSharding) -> Any:
    """Inside `jax.jit`: fix the layout of `tree`'s arrays, so every step's outputs have the
    inputs' layout and the next call reuses the compiled program."""
    return eqx.filter_shard(tree, sharding)


def constrain_members(tree: Any, sharding: Sharding) -> Any:
    split, whole = sharding.spec(sharding.members), sharding.spec()
    dynamic, static = eqx.partition(tree, eqx.is_array)
    dynamic = jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, split if x.ndim else whole), dynamic
    )
    return eqx.combine(dynamic, static)


def per_device_loss(loss_fn: Callable, sharding: Sharding | None) -> Callable:
    """`loss_fn` evaluated by each device on its own rows of the batch (`jax.shard_map`
    over the `data` axis) and averaged over the devices: what `Sharding(...,
    per_example_loss=True)` trains with; `loss_fn` itself otherwise.

    Each device's solves are local loops: under the partitioner, a vmapped adaptive solve
    of a sharded batch is one loop over the global batch, whose "any example unfinished"
    test is an all-reduce on every solver iteration, forward and backward. Here the only
    collective of the step reduces the gradients (with the loss and scalar aux values).
    The mean of equal-sized shards' means is the global mean, so this equals `loss_fn`
    for means of per-example terms.
    """
    if sharding is None or not sharding.per_example_loss:
        return loss_fn
    axis = sharding.data
    assert axis is not None  # `Sharding.__check_init__`
    data, whole = PartitionSpec(axis), PartitionSpec()

    def sharded_loss(model: Any, batch: Any, key: Any) -> Any:
        params, rest = eqx.partition(model, trainable(model))
        # Every array enters `shard_map` as an argument (tolerances too), none closed over.
        arrays, static = eqx.partition(rest, eqx.is_array)
        aux_info: dict[str, Any] = {}

        def run(params: Any, grad: bool) -> tuple[tuple[Array, Any], Any]:
            local = functools.partial(
                _local_loss, loss_fn, axis, aux_info, static=static, grad=grad
            )
            losses, leaves, grads = jax.shard_map(
                local,
                mesh=sharding.spec().mesh,
                in_specs=(whole, whole, data, whole),
                out_specs=(data, data, whole),
                check_vma=False,  # Equinox's checks make unvarying values in varying loops
            )(params, arrays, batch, key)
            scalars = aux_info["scalar"]
            leaves = [x[0] if s else x for x, s in zip(leaves, scalars, strict=True)]
            return (jnp.mean(losses), jax.tree.unflatten(aux_info["tree"], leaves)), grads

        # The gradient is computed with the value, per device, and reduced once.
        @jax.custom_vjp
        def evaluate(params: Any) -> tuple[Array, Any]:
            return run(params, grad=False)[0]

        def backward(grads: Any, cotangent: tuple[Array, Any]) -> tuple[Any]:
            return (jax.tree.map(lambda g: cotangent[0] * g, grads),)

        evaluate.defvjp(functools.partial(run, grad=True), backward)
        loss, aux = evaluate(params)
        return loss if aux_info["tree"] == jax.tree.structure(None) else (loss, aux)

    return sharded_loss


def _local_loss(
    loss_fn: Callable,
    axis: str,
    aux_info: dict[str, Any],
    params: Any,
    arrays: Any,
    batch: Any,
    key: Any,
    *,
    static: Any,
    grad: bool,
) -> tuple[Array, list[Array], Any]:
    """One device's loss (shape `(1,)`), aux leaves and, with `grad`, the gradient averaged
    over the devices; the aux's structure is left in `aux_info`."""

    def value(p: Any) -> tuple[Array, Any]:
        out = loss_fn(eqx.combine(p, arrays, static), batch, key)
        return out if isinstance(out, tuple) else (out, None)

    # Traced with no mesh in context, and differentiated here rather than through
    # `shard_map`: Equinox's closure conversion of a checkpointed solver loop compares
    # argument types that otherwise carry the manual mesh on one side only (diffrax issues
    # 735 and 738: "shard_map fails on the solver loop"). The collectives need only the
    # axis name, which `shard_map` binds.
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ())):
        key = jax.random.fold_in(key, jax.lax.axis_index(axis))
        if grad:
            (loss, aux), grads = jax.value_and_grad(value, has_aux=True)(params)
            grads = jax.lax.pmean(grads, axis)
        else:
            (loss, aux), grads = value(params), None
    leaves, aux_info["tree"] = jax.tree.flatten(aux)
    aux_info["scalar"] = [jnp.ndim(x) == 0 for x in leaves]
    # Scalars averaged over the devices, as the loss is; arrays joined along axis 0.
    leaves = [
        jax.lax.pmean(jnp.asarray(x, float), axis)[None] if scalar else x
        for x, scalar in zip(leaves, aux_info["scalar"], strict=True)
    ]
    return jnp.reshape(loss, (1,)), leaves, grads


@contextlib.contextmanager
def _run_time_checks_as_nan() -> Iterator[None]:
    """While tracing a sharded step, Equinox's run-time checks (`eqx.error_if`, e.g.
    Diffrax's `max_steps` check) in `EQX_ON_ERROR=raise` mode turn their outputs into NaN
    instead of raising.

    A check that raises runs as a host callback on one device only: that device's thread
    fails while the others wait for it in the next all-reduce, and XLA:CPU aborts the whole
    process after 40 s (diffrax issue 247's crash of callbacks under sharding). As NaN, a
    failed check reaches `fit`'s guard on every device at once, which raises
    `NonFiniteLossError` naming the step and the solver outcome the loss reports as
    `"result"`. Only the mode is changed, and only while tracing (Equinox reads it then);
    `off`, `nan` and `breakpoint` are left as set.
    """
    # Equinox (0.13.8) has no public switch of the mode per call: `error_if`'s `on_error`
    # argument is removed from its documented API and Diffrax's checks do not pass it,
    # and the `EQX_ON_ERROR` environment variable is read once, at import.
    from equinox import _errors

    if getattr(_errors, "EQX_ON_ERROR", None) != "raise":
        yield
        return
    setattr(_errors, "EQX_ON_ERROR", "nan")  # noqa: B010 (a private name)
    try:
        yield
    finally:
        setattr(_errors, "EQX_ON_ERROR", "raise")  # noqa: B010


def sharded_step(
    body: Callable,
    sharding: Sharding,
    *,
    ensemble: bool,
    batch_axis: int | None,
    owner: str = "fit",
) -> Callable:
    """`body(model, opt_state, batch, key)` (a one-device step) as a jitted step over the
    mesh: inputs moved to their layout before the call, outputs constrained to it."""
    batch_spec = _batch_spec(sharding, ensemble, batch_axis)

    def place_state(model: Any, opt_state: Any) -> tuple[Any, Any]:
        if ensemble:
            return put_member_tree((model, opt_state), sharding)
        return put((model, opt_state), sharding.spec())

    @eqx.filter_jit
    def compiled(model, opt_state, batch, key):
        model, opt_state, loss, *rest = body(model, opt_state, batch, key)
        if ensemble:
            model, opt_state = constrain_members((model, opt_state), sharding)
            loss = constrain(loss, sharding.spec(sharding.members))
        else:
            model, opt_state = constrain((model, opt_state), sharding.spec())
        return (model, opt_state, loss, *rest)

    def step(model, opt_state, batch, key):
        check_batch(owner, sharding, "batch", batch, _data_axis(ensemble, batch_axis))
        if ensemble:
            check_members(owner, sharding, "ensemble", leading_size(model))
        model, opt_state = place_state(model, opt_state)
        batch = put(batch, batch_spec)
        # In one process an uncommitted key (fresh from `jr.key`, `jr.split`) is copied to
        # the devices by the call itself; moving it first costs milliseconds on 8 devices.
        if jax.process_count() > 1 or getattr(key, "committed", True):
            key = put(key, sharding.spec())
        with _run_time_checks_as_nan():
            return compiled(model, opt_state, batch, key)

    return step


def _data_axis(ensemble: bool, batch_axis: int | None) -> int:
    # Per-member batches (`batch_axis=0`) carry the batch on their second axis.
    return 1 if ensemble and batch_axis is not None else 0


def _batch_spec(sharding: Sharding, ensemble: bool, batch_axis: int | None) -> NamedSharding:
    if ensemble and batch_axis is not None:
        if batch_axis != 0:
            raise ValueError(
                f"make_ensemble_step: with `mesh`, per-member batches must be stacked on axis 0 "
                f"(`batch_axis=0`), got `batch_axis={batch_axis}`. Move the member axis first."
            )
        return sharding.spec(sharding.members, sharding.data)
    return sharding.spec(sharding.data)


__all__ = ["constrain", "constrain_members", "per_device_loss", "sharded_step"]
