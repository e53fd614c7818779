"""Argument checks shared by the continuous models.

Two layers, as in Diffrax: structure errors (shapes, dtypes, missing arguments) are raised at
trace time as `ValueError`/`TypeError`; value errors that can only be seen at run time inside
compiled code (non-increasing times, non-finite states) use `eqx.error_if`. When the values are
concrete, as in eager calls, the value checks are raised at trace time too.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, PRNGKeyArray, PyTree


def is_concrete(x: Any) -> bool:
    """True when `x` holds values now (not a tracer inside `jit`/`grad`/`vmap`)."""
    return not isinstance(x, Tracer)


def check_positive(owner: str, name: str, value: Any, fix: str = "") -> None:
    """Raise `ValueError` if a concrete `value` is not > 0."""
    if value is None or not is_concrete(value):
        return
    if not np.all(np.asarray(value) > 0):
        raise ValueError(f"{owner}: `{name}` must be > 0, got {value!r}. {fix}".rstrip())


def check_state(owner: str, y0: PyTree[Any]) -> PyTree[Array]:
    """Validate an initial state: floating dtype, finite values. Returns it as JAX arrays."""
    leaves, treedef = jax.tree.flatten(y0)
    if not leaves:
        raise ValueError(f"{owner}: the initial state `y0` is empty (a PyTree with no arrays).")
    out = []
    for leaf in leaves:
        leaf = jnp.asarray(leaf)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{owner}: the initial state `y0` has dtype {leaf.dtype}, but differential "
                "equations need a floating dtype. Convert it first, e.g. "
                "`y0.astype(jnp.float32)`."
            )
        if is_concrete(leaf):
            if not np.all(np.isfinite(np.asarray(leaf))):
                raise ValueError(
                    f"{owner}: the initial state `y0` contains NaN or inf "
                    f"(value {np.asarray(leaf)!r}). Check the data or the encoder that made it."
                )
        else:
            leaf = eqx.error_if(
                leaf,
                ~jnp.isfinite(leaf),
                f"{owner}: the initial state `y0` contains NaN or inf. Check the data or the "
                "encoder that made it.",
            )
        out.append(leaf)
    return jax.tree.unflatten(treedef, out)


def check_field_output(owner: str, role: str, field: Any, t0: Any, y0: Any, args: Any, want: Any):
    """Trace `field` once and check its output has the structure and shapes of `want`.

    `want` is a PyTree of `jax.ShapeDtypeStruct` (or arrays). Tracing happens at trace time
    only, so this costs nothing at run time.
    """
    try:
        out = jax.eval_shape(field, t0, y0, args)
    except Exception as e:
        shapes = jax.tree.map(lambda x: tuple(jnp.shape(x)), y0)
        raise ValueError(
            f"{owner}: evaluating the {role} on the initial state failed. The state has "
            f"shape {shapes}; check that the field was built for states of this shape.\n"
            f"Underlying error: {type(e).__name__}: {e}"
        ) from e
    out_struct = jax.tree.structure(out)
    want_struct = jax.tree.structure(want)
    out_shapes = jax.tree.map(lambda x: tuple(x.shape), out)
    want_shapes = jax.tree.map(lambda x: tuple(jnp.shape(x)), want)
    if out_struct != want_struct or out_shapes != want_shapes:
        raise ValueError(
            f"{owner}: the {role} returns shape {out_shapes}, but shape {want_shapes} is "
            "needed for this state. Build the field for this state size (e.g. "
            "`MLPField(size=...)`) or reshape the state."
        )


def check_times(owner: str, ts: Any, t0: Any, t1: Any) -> Array:
    """Validate save times: 1-D, non-empty, strictly increasing, inside `[t0, t1]`."""
    ts = jnp.asarray(ts)
    if not jnp.issubdtype(ts.dtype, jnp.floating):
        ts = ts.astype(jnp.result_type(float))
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(
            f"{owner}: `ts` must be a non-empty 1-D array of save times, got shape {ts.shape}. "
            "Pass e.g. `ts=jnp.linspace(t0, t1, 50)`, or `ts=None` to return only y(t1)."
        )
    increasing_msg = (
        f"{owner}: `ts` must be strictly increasing. Sort the save times and drop duplicates "
        "(e.g. `jnp.unique(ts)`)."
    )
    bounds = ", ".join(str(x) if is_concrete(x) else "traced" for x in (t0, t1))
    range_msg = (
        f"{owner}: `ts` must lie inside [t0, t1] = [{bounds}]. Widen the interval "
        "(the model's `t0`/`t1`, or the call's `t0=`/`t1=`) or drop the outside times."
    )
    concrete = all(is_concrete(x) for x in (ts, t0, t1))
    if concrete:
        ts_np = np.asarray(ts)
        if ts_np.shape[0] > 1 and not np.all(np.diff(ts_np) > 0):
            raise ValueError(f"{increasing_msg} Got ts={ts_np!r}.")
        if ts_np[0] < float(t0) or ts_np[-1] > float(t1):
            raise ValueError(f"{range_msg} Got ts from {ts_np[0]} to {ts_np[-1]}.")
        return ts
    if ts.shape[0] > 1:
        ts = eqx.error_if(ts, jnp.any(jnp.diff(ts) <= 0), increasing_msg)
    ts = eqx.error_if(ts, (ts[0] < t0) | (ts[-1] > t1), range_msg)
    return ts


def check_interval(owner: str, t0: Any, t1: Any) -> None:
    """Raise `ValueError` when concrete `t0 >= t1`."""
    if all(is_concrete(x) for x in (t0, t1)) and not (
        float(t1) > float(t0) and np.isfinite(float(t0)) and np.isfinite(float(t1))
    ):
        raise ValueError(
            f"{owner}: the time interval needs finite t1 > t0, got t0={t0}, t1={t1}. "
            "Integrating backwards in time is not supported by this model; reparametrize time "
            "instead."
        )


def guard_interval(owner: str, t0: Any, t1: Any) -> Any:
    """`t1`, with a run-time check that a traced interval has `t1 > t0`.

    Concrete intervals are checked by `check_interval` at trace time; a traced end time (e.g.
    the last of save times passed under `jit`) would otherwise integrate backwards in time.
    The check is attached to `t1` itself, so it runs once per solve (and, when `t1` is not
    batched, only calls back to Python if it fails).
    """
    if all(is_concrete(x) for x in (t0, t1)):
        check_interval(owner, t0, t1)
        return t1
    return eqx.error_if(
        t1,
        ~(jnp.asarray(t1) > jnp.asarray(t0)),
        f"{owner}: the time interval needs t1 > t0, but the (traced) end time is not after "
        "the start. Integrating backwards in time is not supported by this model; "
        "reparametrize time instead.",
    )


def guard_tolerances(owner: str, controller: Any) -> Any:
    """`controller`, after checking its `rtol`/`atol` (PID, possibly clipped) are finite, > 0.

    Concrete tolerances raise `ValueError` now; traced ones (e.g. a model passed through
    `eqx.filter_jit`, where `neurde.Tolerances` holds arrays) are checked once per solve with
    `eqx.error_if` on the tolerances themselves: a negative `rtol` would otherwise run, and a
    NaN `atol` reject every step until `max_steps`.
    """
    import diffrax  # the controllers; imported here to keep this module light

    if isinstance(controller, diffrax.ClipStepSizeController):
        inner = guard_tolerances(owner, controller.controller)
        return eqx.tree_at(lambda c: c.controller, controller, inner)
    if not isinstance(controller, diffrax.PIDController):
        return controller
    fix = (
        "Typical values are rtol=1e-3, atol=1e-6 for training and rtol=1e-7, atol=1e-9 for "
        "accuracy."
    )
    checked = []
    for name in ("rtol", "atol"):
        value = getattr(controller, name)
        if is_concrete(value):
            v = np.asarray(value)
            if not (np.all(np.isfinite(v)) and np.all(v > 0)):
                raise ValueError(f"{owner}: `{name}` must be finite and > 0, got {v!r}. {fix}")
        else:
            bad = jnp.any(~jnp.isfinite(value) | (value <= 0))
            value = eqx.error_if(value, bad, f"{owner}: `{name}` must be finite and > 0. {fix}")
        checked.append(value)
    if all(is_concrete(x) for x in checked):
        return controller
    return eqx.tree_at(lambda c: (c.rtol, c.atol), controller, tuple(checked))


def promote_state(owner: str, field: Any, t0: Any, y0: PyTree[Array], args: Any) -> PyTree[Array]:
    """`y0` promoted leaf by leaf to the dtype of `field(t0, y0, args)` when that is wider.

    Diffrax promotes `y0` to the dtype of the times; a float64 field on a float32 state (with
    x64 on) would otherwise fail deep inside the solver (`buffer.at[i].set`). Call after
    `check_field_output`, which guarantees the structures match.
    """
    del owner
    out = jax.eval_shape(field, t0, y0, args)
    return jax.tree.map(lambda y, o: y.astype(jnp.result_type(y.dtype, o.dtype)), y0, out)


def check_width(owner: str, name: str, y: Any, size: int, fix: str) -> None:
    """Raise `ValueError` unless `y` is a vector of length `size` (checked at trace time)."""
    shape = tuple(jnp.shape(y))
    if shape != (size,):
        raise ValueError(
            f"{owner}: `{name}` has shape {shape}, but this was built for vectors of shape "
            f"({size},). {fix}"
        )


def check_key(owner: str, key: Any, name: str = "key") -> Any:
    """Raise `TypeError` unless `key` is one JAX PRNG key (typed `jr.key` or raw `jr.PRNGKey`)."""
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", (None,)))
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    raw = dtype == jnp.uint32 and shape == (2,)
    if not (typed or raw):
        what = type(key).__name__ if dtype is None else f"an array of dtype {dtype}, shape {shape}"
        raise TypeError(
            f"{owner}: `{name}` must be one JAX PRNG key, got {what}. Pass e.g. "
            f"`{name}=jax.random.key(0)`."
        )
    return key


def require_key(owner: str, key: Any, what: str, how: str) -> PRNGKeyArray:
    """`key`, or a `ValueError` that says what the key draws and how to switch it off."""
    if key is None:
        raise ValueError(
            f"{owner}: a `key` is needed in training mode to {what}: call "
            f"`model(y0, key=jr.key(0))`. {how}"
        )
    return check_key(owner, key)


def check_callable(owner: str, name: str, value: Any, what: str, optional: bool = False) -> None:
    """Raise `TypeError` unless `value` is callable (or `None` when `optional`)."""
    if not callable(value) and not (optional and value is None):
        raise TypeError(
            f"{owner}: `{name}` must be {what}{' (or None)' if optional else ''}, got "
            f"{type(value).__name__}."
        )
