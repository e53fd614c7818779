"""Argument checks of the training functions: each names the call, the argument, the value
and the fix, and runs before anything is compiled."""

import os
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ..tolerances import trainable
from ._config import describe, differences, format_differences


def integer(fn: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{fn}: `{name}` must be an integer >= {minimum}, got {value!r}.")


def flag(fn: str, name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: `{name}` must be True or False, got {value!r}.")


def function(fn: str, name: str, value: Any, signature: str, optional: bool = False) -> None:
    if (value is None and optional) or callable(value):
        return
    raise TypeError(
        f"{fn}: `{name}` must be a function `{signature}`"
        f"{' or None' if optional else ''}, got {type(value).__name__} ({value!r})."
    )


def optimizer(fn: str, optim: Any) -> None:
    """An Optax transformation: anything with `init` and `update`."""
    if callable(getattr(optim, "init", None)) and callable(getattr(optim, "update", None)):
        return
    hint = (
        f" (to use Optax's {optim}, pass `optax.{optim}(1e-3)`)" if isinstance(optim, str) else ""
    )
    raise TypeError(
        f"{fn}: `optim` must be an Optax transformation such as `optax.adam(1e-3)`, got "
        f"{type(optim).__name__} ({optim!r}){hint}."
    )


def path_or_none(fn: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{fn}: `{name}` must be a folder name (str or pathlib.Path) or None, got "
            f"{type(value).__name__} ({value!r})."
        )


def has_parameters(fn: str, model: Any) -> None:
    if not jax.tree.leaves(eqx.filter(model, trainable(model))):
        raise ValueError(
            f"{fn}: `model` has no trainable arrays (floating-point arrays other than solver "
            f"tolerances), so there is nothing to train; got a {type(model).__name__}."
        )


def _size(shape: tuple[int, ...], axis: int) -> int | None:
    ax = axis if axis >= 0 else len(shape) + axis
    return shape[ax] if 0 <= ax < len(shape) else None


def member_axis(fn: str, name: str, tree: Any, n: int, axis: int, fix: str) -> None:
    """Every array leaf of `tree` has size `n` along `axis` (the ensemble's members)."""
    shapes = [np.shape(x) for x in jax.tree.leaves(tree) if eqx.is_array(x)]
    sizes = {_size(s, axis) for s in shapes}
    if sizes and sizes != {n}:
        raise ValueError(
            f"{fn}: `{name}` must have a member axis (axis {axis}) of size {n}, the number of "
            f"ensemble members; its arrays have shapes {shapes[:4]}"
            f"{' ...' if len(shapes) > 4 else ''}. {fix}"
        )


def same_structure(fn: str, name: str, given: Any, expected: Any, fix: str) -> None:
    lines = differences(describe(expected), describe(given), name)
    if lines:
        raise ValueError(
            f"{fn}: `{name}` does not fit the model and optimizer: it differs from "
            f"`optim.init` of the model's parameters in {len(lines)} place(s) "
            f"(expected -> given):\n{format_differences(lines)}\n{fix}"
        )


__all__ = [
    "flag",
    "function",
    "has_parameters",
    "integer",
    "member_axis",
    "optimizer",
    "path_or_none",
    "same_structure",
]
