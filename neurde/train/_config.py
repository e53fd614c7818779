"""The configuration of a PyTree: everything about it except the values of its arrays.

A checkpoint stores this description so that loading can refuse a model whose settings
differ from the saved one, and say where: the class of every module, every static field
(a `NeuralODE`'s `t1`, `dt0`, `max_steps`, a layer's sizes), every non-array leaf (the
activation function, a Python float) and the shape and dtype of every array. It is a flat
JSON dict `{path: description}`, so two configurations compare entry by entry.
"""

import dataclasses
import json
from typing import Any

import equinox as eqx
import numpy as np

_JSON_SCALARS = (bool, int, float, str, type(None))


def callable_name(x: Any) -> str:
    # Module and qualified name only: a repr holds a memory address, which differs between
    # processes, so two identical models would never compare equal.
    module = getattr(x, "__module__", None) or type(x).__module__
    name = getattr(x, "__qualname__", None) or getattr(x, "__name__", None)
    return f"<function {module}.{name or type(x).__qualname__}>"


def _walk(x: Any, path: str, out: dict[str, Any]) -> None:
    if eqx.is_array(x) or isinstance(x, np.ndarray):
        out[path] = f"{np.dtype(x.dtype).name}{list(np.shape(x))}"
    elif isinstance(x, eqx.Module):
        out[path] = f"<{type(x).__qualname__}>"
        for field in dataclasses.fields(x):
            # `inference` is a mode (`eqx.nn.inference_mode` flips it), not configuration:
            # a model saved in inference mode loads into a training one, as before.
            if field.name == "inference":
                continue
            if hasattr(x, field.name):
                _walk(getattr(x, field.name), f"{path}.{field.name}", out)
    elif isinstance(x, tuple) and hasattr(x, "_fields"):  # NamedTuple (optimizer states)
        out[path] = f"<{type(x).__qualname__}>"
        names = x._fields  # pyright: ignore[reportAttributeAccessIssue]
        for name, value in zip(names, x, strict=True):
            _walk(value, f"{path}.{name}", out)
    elif isinstance(x, (tuple, list)):
        out[path] = f"{type(x).__name__}[{len(x)}]"
        for i, value in enumerate(x):
            _walk(value, f"{path}[{i}]", out)
    elif isinstance(x, dict):
        out[path] = f"dict[{len(x)}]"
        # Sorted like `jax.tree.leaves` sorts dict keys.
        for k in sorted(x, key=repr):
            _walk(x[k], f"{path}[{k!r}]", out)
    elif isinstance(x, np.generic):
        out[path] = x.item()
    elif isinstance(x, _JSON_SCALARS):
        out[path] = x
    elif callable(x):
        out[path] = callable_name(x)
    else:
        text = repr(x)
        out[path] = f"<{type(x).__qualname__}>" if " at 0x" in text else text


def describe(tree: Any) -> dict[str, Any]:
    """`{path: description}` of every node of `tree`, normalized through JSON."""
    out: dict[str, Any] = {}
    _walk(tree, "", out)
    # Through JSON once, so that a fresh description equals a stored one (tuples -> lists).
    return json.loads(json.dumps(out))


def differences(stored: dict[str, Any], given: dict[str, Any], prefix: str) -> list[str]:
    """One line `path: stored -> given` per entry that differs, in tree order."""
    lines = []
    for path, value in stored.items():
        mine = given.get(path, "(absent)")
        if mine != value:
            lines.append(f"{prefix}{path}: {value!r} -> {mine!r}")
    lines += [f"{prefix}{p}: (absent) -> {v!r}" for p, v in given.items() if p not in stored]
    return lines


def format_differences(lines: list[str], limit: int = 20) -> str:
    shown = "\n".join(f"  {line}" for line in lines[:limit])
    if len(lines) > limit:
        shown += f"\n  ... and {len(lines) - limit} more"
    return shown


__all__ = ["callable_name", "describe", "differences", "format_differences"]
