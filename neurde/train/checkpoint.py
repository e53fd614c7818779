"""Checkpoints: Equinox serialization behind a JSON header that describes the whole model.

A file holds one magic line, one line of JSON, then the array data. The header stores the
neurde version, user hyperparameters, the *configuration* of the model (and optimizer
state): the class of every module, every static field (e.g. a `NeuralODE`'s `t1`, solver
and `max_steps`), every non-array leaf, and the shape and dtype of every array; and the
length and SHA-256 of the array data. `load` compares the configuration with the model it
is given and lists every difference, and detects a truncated or damaged file before reading
it; every error names the file. Loading reads JSON and NumPy arrays only (no pickle): no
code from the file is ever executed.

Writes are atomic: the bytes go to a temporary file in the same folder, are flushed and
`fsync`ed, and replace the old file with `os.replace`, so a crash mid-write (or a killed
process) leaves the previous checkpoint intact.
"""

import contextlib
import hashlib
import io
import json
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

import equinox as eqx

from .._version import __version__
from ._config import describe, differences, format_differences

_PREFIX = b"NEURDE-CHECKPOINT "
_MAGIC = _PREFIX + b"2\n"
_HEADER_KEYS = ("neurde_version", "hyperparams", "model", "opt_state", "segments", "sha256")


def _serialise(tree: Any) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    return buffer.getvalue()


def _as_path(fn: str, path: Any) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{fn}: `path` must be a str or pathlib.Path, got {type(path).__name__} "
            f"({path!r}). Pass the file name, e.g. `'model.eqx'`."
        )
    return pathlib.Path(path)


def _atomic_write(path: pathlib.Path, chunks: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the folder is synced (POSIX).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write(path: pathlib.Path, header: dict[str, Any], segments: dict[str, bytes]) -> None:
    """Write a checkpoint atomically: `header` (JSON) then the named byte segments."""
    payload = b"".join(segments.values())
    header = dict(
        header,
        segments=[[name, len(data)] for name, data in segments.items()],
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    _atomic_write(path, [_MAGIC, json.dumps(header).encode() + b"\n", payload])


def _corrupted(fn: str, path: pathlib.Path, what: str) -> ValueError:
    return ValueError(
        f"{fn}: {str(path)!r} is damaged: {what}. The file was changed or cut short after "
        "it was written (neurde writes atomically); use an earlier checkpoint."
    )


def _read(path: pathlib.Path, fn: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The header and the byte segments of a checkpoint, each checked; errors name `path`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{fn}: no checkpoint at {str(path)!r} (file not found). Check the path."
        ) from None
    magic, _, rest = raw.partition(b"\n")
    if not magic.startswith(_PREFIX):
        raise ValueError(
            f"{fn}: {str(path)!r} is not a neurde checkpoint (missing header line). Write "
            "checkpoints with `neurde.save`."
        )
    if magic + b"\n" != _MAGIC:
        raise ValueError(
            f"{fn}: {str(path)!r} has checkpoint format {magic[len(_PREFIX) :].decode()!r}; "
            f"this neurde ({__version__}) reads format 2. Load it with the neurde version "
            "that wrote it and save it again."
        )
    header_line, newline, payload = rest.partition(b"\n")
    if not newline:
        raise _corrupted(fn, path, "the file ends inside its header")
    try:
        header = json.loads(header_line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupted(fn, path, f"its header is not valid JSON ({e})") from None
    missing = [k for k in _HEADER_KEYS if not isinstance(header, dict) or k not in header]
    if missing:
        raise _corrupted(fn, path, f"its header lacks the entries {missing}")
    expected = sum(n for _, n in header["segments"])
    if len(payload) < expected:
        raise _corrupted(fn, path, f"truncated: {len(payload)} of {expected} bytes of array data")
    if len(payload) > expected or hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise _corrupted(fn, path, "the array data does not match the header's checksum")
    segments, start = {}, 0
    for name, n in header["segments"]:
        segments[name] = payload[start : start + n]
        start += n
    return header, segments


def _check_config(
    fn: str, path: pathlib.Path, what: str, arg: str, stored: dict[str, Any], like: Any, hint: str
) -> None:
    prefix = "model" if what == "model" else "opt_state"
    lines = differences(stored["config"], describe(like), prefix)
    if lines:
        raise ValueError(
            f"{fn}: {str(path)!r} holds a {what} that differs from `{arg}` in {len(lines)} "
            f"place(s) (path: stored -> given):\n{format_differences(lines)}\n{hint}"
        )


def _deserialise(fn: str, path: pathlib.Path, data: bytes, like: Any) -> Any:
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(data), like)
    except Exception as e:
        raise ValueError(f"{fn}: could not read the arrays of {str(path)!r}: {e}") from e


def save(
    path: str | pathlib.Path,
    model: Any,
    *,
    hyperparams: dict[str, Any] | None = None,
    opt_state: Any = None,
) -> None:
    """Write `model` (and optionally `opt_state`) to `path`, atomically.

    The header stores the configuration of the model (classes, static fields, shapes and
    dtypes), which `load` checks.

    **Arguments:**

    - `path`: file to write (parent folders are created). An existing file is replaced
      only once the new one is complete on disk.
    - `model`: any Equinox module or PyTree of arrays.
    - `hyperparams`: JSON-serialisable constructor arguments, stored in the header so that
      `load(path, like=make_model)` can rebuild the skeleton.
    - `opt_state`: an optimizer state to save alongside.
    """
    path = _as_path("save", path)
    if hyperparams is not None and not isinstance(hyperparams, dict):
        raise TypeError(
            f"save: `hyperparams` must be a dict (or None), got {type(hyperparams).__name__}."
        )
    hyperparams = {} if hyperparams is None else dict(hyperparams)
    try:
        json.dumps(hyperparams)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"save: `hyperparams` must be JSON-serialisable (numbers, strings, lists, dicts); "
            f"got {hyperparams!r}: {e}"
        ) from e
    header = {
        "neurde_version": __version__,
        "hyperparams": hyperparams,
        "model": {"class": type(model).__name__, "config": describe(model)},
        "opt_state": None
        if opt_state is None
        else {"class": type(opt_state).__name__, "config": describe(opt_state)},
    }
    segments = {"model": _serialise(model)}
    if opt_state is not None:
        segments["opt_state"] = _serialise(opt_state)
    _write(path, header, segments)


def load_header(path: str | pathlib.Path) -> dict[str, Any]:
    """The JSON header of a checkpoint: version, hyperparameters, configuration.

    The file is checked whole (length and checksum), as by `load`.
    """
    return _read(_as_path("load_header", path), "load_header")[0]


def load(
    path: str | pathlib.Path,
    like: Any | Callable[[dict[str, Any]], Any],
    *,
    opt_state_like: Any = None,
) -> Any:
    """Read a checkpoint written by `save`.

    **Arguments:**

    - `path`: the file.
    - `like`: a model of the same configuration (its array values are replaced), or a
      function `hyperparams -> model` that builds one from the header's hyperparameters.
    - `opt_state_like`: an optimizer state of the same structure, to load it too.

    **Returns:**

    The model, or `(model, opt_state)` when `opt_state_like` is given.

    **Raises:**

    `FileNotFoundError` for a missing file; `ValueError` for a file that is not a neurde
    checkpoint, is truncated or damaged, or holds a model whose configuration differs from
    `like` (listing every difference: path, stored value, given value). Each names the file.
    """
    path = _as_path("load", path)
    header, segments = _read(path, "load")
    if callable(like) and not isinstance(like, eqx.Module):
        like = like(header["hyperparams"])
    hint = (
        "Build `like` with the same class and settings as the saved model (saved "
        f"hyperparameters: {header['hyperparams']}; see `neurde.load_header(path)`)."
    )
    _check_config("load", path, "model", "like", header["model"], like, hint)
    model = _deserialise("load", path, segments["model"], like)
    if opt_state_like is None:
        return model
    if header["opt_state"] is None:
        raise ValueError(
            f"load: {str(path)!r} holds no optimizer state; pass `opt_state_like=None`."
        )
    hint = "Build `opt_state_like` with the optimizer that wrote the file."
    _check_config(
        "load", path, "optimizer state", "opt_state_like", header["opt_state"], opt_state_like, hint
    )
    return model, _deserialise("load", path, segments["opt_state"], opt_state_like)


__all__ = ["load", "load_header", "save"]
