"""Argument validation shared by the data generators.

Every check raises a `ValueError` or `TypeError` that names the call, the argument, the
offending value and the fix, following the neurde convention.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def count(fn: str, name: str, value: Any, minimum: int) -> int:
    """Check that `value` is a Python integer `>= minimum` and return it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"`{fn}(..., {name}={value!r})`: `{name}` must be a Python integer, "
            f"got {type(value).__name__}. Pass an integer such as `{name}={minimum}`."
        )
    if value < minimum:
        raise ValueError(
            f"`{fn}(..., {name}={value!r})`: `{name}` must be >= {minimum}, got {value}. "
            f"Pass `{name}={minimum}` or larger."
        )
    return int(value)


def number(fn: str, name: str, value: Any) -> float:
    """Check that `value` is a finite real Python number and return it as a float."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{fn}(..., {name}={value!r})`: `{name}` must be a real Python number, "
            f"got {type(value).__name__}. Data generators are called outside `jax.jit`; "
            "pass a concrete float."
        ) from None
    if not math.isfinite(out):
        raise ValueError(
            f"`{fn}(..., {name}={value!r})`: `{name}` must be finite, got {value!r}. "
            "Pass a finite number."
        )
    return out


def positive(fn: str, name: str, value: Any) -> float:
    """Check that `value` is a finite number `> 0` and return it as a float."""
    out = number(fn, name, value)
    if out <= 0:
        raise ValueError(
            f"`{fn}(..., {name}={value!r})`: `{name}` must be > 0, got {value!r}. "
            f"Pass a positive `{name}`."
        )
    return out


def nonnegative(fn: str, name: str, value: Any) -> float:
    """Check that `value` is a finite number `>= 0` and return it as a float."""
    out = number(fn, name, value)
    if out < 0:
        raise ValueError(
            f"`{fn}(..., {name}={value!r})`: `{name}` must be >= 0, got {value!r}. "
            f"Pass `{name}=0` to switch it off, or a positive value."
        )
    return out


def float_dtype(fn: str, dtype: Any) -> jnp.dtype:
    """Check that `dtype` is a floating dtype that JAX can currently represent.

    `None` means JAX's default float: float32, or float64 with x64 on (as `jnp.zeros`).
    """
    if dtype is None:
        return jnp.dtype(jnp.result_type(float))
    try:
        out = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"`{fn}(..., dtype={dtype!r})`: `dtype` is not a dtype. "
            "Pass `dtype=jnp.float32` or `dtype=jnp.float64`."
        ) from None
    if not jnp.issubdtype(out, jnp.floating):
        raise TypeError(
            f"`{fn}(..., dtype={dtype!r})`: `dtype` must be a floating dtype, got {out}. "
            "Pass `dtype=jnp.float32` or `dtype=jnp.float64`."
        )
    if jax.dtypes.canonicalize_dtype(out) != out:
        # Without this check JAX would silently hand back float32 data.
        raise ValueError(
            f"`{fn}(..., dtype={dtype!r})`: {out} is disabled in JAX. Enable it with "
            "`jax.config.update('jax_enable_x64', True)` or inside "
            "`with jax.enable_x64(True):`, or pass `dtype=jnp.float32`."
        )
    return out


def prng_key(fn: str, key: Any) -> None:
    """Check that `key` looks like a JAX PRNG key."""
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    is_typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    is_raw = dtype == jnp.uint32 and shape == (2,)
    if not (is_typed or is_raw):
        raise TypeError(
            f"`{fn}(..., key={key!r})`: `key` must be a single JAX PRNG key. "
            "Pass e.g. `key=jax.random.key(0)`."
        )


def pairs(fn: str, name: str, y: Any) -> None:
    """Raise `ValueError` unless the last axis of `y` has size 2 (a planar state or point)."""
    shape = tuple(jnp.shape(y))
    if not shape or shape[-1] != 2:
        raise ValueError(
            f"`{fn}`: `{name}` must have a last axis of size 2 (e.g. (q, p), (x, v) or a "
            f"point in the plane), got shape {shape}."
        )


def positive_scale(fn: str, name: str, value: Any, dtype: Any) -> None:
    """Raise `ValueError` unless a concrete scale (a standard deviation) is finite and > 0,
    and not so small that it rounds to zero (or loses precision) in `dtype`."""
    if isinstance(value, int | float) and not (0 < value < float("inf")):
        raise ValueError(f"`{fn}`: `{name}` must be a finite number > 0, got {value!r}.")
    tiny = float(jnp.finfo(dtype).tiny)
    if isinstance(value, int | float) and value < tiny:
        raise ValueError(
            f"`{fn}`: `{name}`={value!r} is below the smallest normal {jnp.dtype(dtype)} "
            f"number ({tiny:.3g}); use a larger value or float64."
        )
