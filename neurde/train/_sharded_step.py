"""The training step on a device mesh: one `jax.jit` program whose inputs are moved to
their layout before each call and whose outputs are constrained to it, so that every step
after the first reuses the compiled program."""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
from jax.sharding import NamedSharding

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
    from equinox import _errors  # Equinox has no public switch of the mode per call

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


__all__ = ["constrain", "constrain_members", "sharded_step"]
