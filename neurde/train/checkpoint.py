"""Checkpoints: Equinox serialization behind a small JSON header.

A file holds one magic line, one line of JSON (neurde version, the model's class, user
hyperparameters, and the shape and dtype of every array leaf), then the leaves written by
`eqx.tree_serialise_leaves`. Loading reads JSON and NumPy arrays only (no pickle): no code
from the file is ever executed. The header lets `load` refuse a file from another model
structure with a message that says what differs.
"""

import json
import pathlib
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .._version import __version__

_MAGIC = b"NEURDE-CHECKPOINT 1\n"


def _leaf_specs(tree: Any) -> list[list[Any]]:
    return [
        [list(np.shape(x)), str(np.asarray(x).dtype) if not hasattr(x, "dtype") else str(x.dtype)]
        for x in jax.tree.leaves(tree)
        if eqx.is_array(x)
    ]


def _describe(tree: Any) -> dict[str, Any]:
    return {"class": type(tree).__name__, "leaves": _leaf_specs(tree)}


def save(
    path: str | pathlib.Path,
    model: Any,
    *,
    hyperparams: dict[str, Any] | None = None,
    opt_state: Any = None,
) -> None:
    """Write `model` (and optionally `opt_state`) to `path`.

    **Arguments:**

    - `path`: file to write (parent folders are created).
    - `model`: any Equinox module or PyTree of arrays.
    - `hyperparams`: JSON-serialisable constructor arguments, stored in the header so that
      `load(path, like=make_model)` can rebuild the skeleton.
    - `opt_state`: an optimizer state to save alongside.
    """
    hyperparams = {} if hyperparams is None else dict(hyperparams)
    try:
        header_text = json.dumps(
            {
                "neurde_version": __version__,
                "hyperparams": hyperparams,
                "model": _describe(model),
                "opt_state": None if opt_state is None else _describe(opt_state),
            }
        )
    except TypeError as e:
        raise TypeError(
            f"save: `hyperparams` must be JSON-serialisable (numbers, strings, lists, dicts); "
            f"got {hyperparams!r}: {e}"
        ) from e
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(_MAGIC)
        f.write(header_text.encode() + b"\n")
        eqx.tree_serialise_leaves(f, (model, opt_state))


def load_header(path: str | pathlib.Path) -> dict[str, Any]:
    """The JSON header of a checkpoint: version, hyperparameters, structure."""
    with pathlib.Path(path).open("rb") as f:
        return _read_header(f, path)


def _read_header(f: Any, path: Any) -> dict[str, Any]:
    if f.readline() != _MAGIC:
        raise ValueError(
            f"load: {str(path)!r} is not a neurde checkpoint (missing header line). Write "
            "checkpoints with `neurde.save`."
        )
    return json.loads(f.readline().decode())


def _compare(what: str, saved: dict[str, Any] | None, like: Any, path: Any) -> None:
    mine = _describe(like)
    if saved is None:
        raise ValueError(f"load: {str(path)!r} holds no {what}; pass `opt_state_like=None`.")
    if saved["class"] != mine["class"]:
        raise ValueError(
            f"load: {str(path)!r} holds a {what} of class {saved['class']}, but `like` is a "
            f"{mine['class']}. Build `like` with the same class and hyperparameters as the "
            "saved model (see `neurde.load_header(path)['hyperparams']`)."
        )
    if len(saved["leaves"]) != len(mine["leaves"]):
        raise ValueError(
            f"load: {str(path)!r} holds a {what} with {len(saved['leaves'])} arrays, but "
            f"`like` has {len(mine['leaves'])}: the model structure differs (e.g. depth). "
            f"Saved hyperparameters: {saved.get('hyperparams', '')}"
        )
    for i, (a, b) in enumerate(zip(saved["leaves"], mine["leaves"], strict=True)):
        if a != b:
            raise ValueError(
                f"load: array {i} of the saved {what} has shape {tuple(a[0])} and dtype "
                f"{a[1]}, but `like` has shape {tuple(b[0])} and dtype {b[1]}: the model "
                "structure differs (e.g. width or state size). Build `like` with the saved "
                "hyperparameters."
            )


def load(
    path: str | pathlib.Path,
    like: Any | Callable[[dict[str, Any]], Any],
    *,
    opt_state_like: Any = None,
) -> Any:
    """Read a checkpoint written by `save`.

    **Arguments:**

    - `path`: the file.
    - `like`: a model of the same structure (its values are replaced), or a function
      `hyperparams -> model` that builds one from the header's hyperparameters.
    - `opt_state_like`: an optimizer state of the same structure, to load it too.

    **Returns:**

    The model, or `(model, opt_state)` when `opt_state_like` is given. Raises `ValueError`
    naming the difference when the file holds another structure.
    """
    path = pathlib.Path(path)
    with path.open("rb") as f:
        header = _read_header(f, path)
        if callable(like) and not isinstance(like, eqx.Module):
            like = like(header["hyperparams"])
        saved_model = dict(header["model"], hyperparams=header["hyperparams"])
        _compare("model", saved_model, like, path)
        if opt_state_like is not None:
            _compare("optimizer state", header["opt_state"], opt_state_like, path)
            model, opt_state = eqx.tree_deserialise_leaves(f, (like, opt_state_like))
            return model, opt_state
        if header["opt_state"] is not None:
            # Skip the stored optimizer state: read it against a matching skeleton of zeros.
            shapes = [np.zeros(s, dtype=d) for s, d in header["opt_state"]["leaves"]]
            model, _ = eqx.tree_deserialise_leaves(f, (like, shapes))
            return model
        model, _ = eqx.tree_deserialise_leaves(f, (like, None))
        return model


__all__ = ["load", "load_header", "save"]
