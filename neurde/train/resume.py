"""Run checkpoints for `fit`: the whole state of a run, written atomically, and resumed.

A run checkpoint is a neurde checkpoint (see `checkpoint.py`) named `step-NNNNNNNNN.ckpt`
whose header also holds the step, the run's configuration (steps, batch size, key, data
shapes and checksum, loss function, ...) and the history's layout; its data holds the
model, the optimizer state and the history's arrays. The two newest are kept, so that a
file damaged by something other than `fit` still leaves one to resume from.
"""

import hashlib
import pathlib
import re
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._version import __version__
from ._config import describe, differences, format_differences
from .checkpoint import _deserialise, _read, _serialise, _write
from .history import History, history_from_bytes, history_to_bytes

_NAME = re.compile(r"step-(\d{9})\.ckpt")
_KEEP = 2


def _key_data(key: Any) -> list[int]:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.key_data(key)
    return np.asarray(key).ravel().tolist()


def _data_checksum(data: Any) -> str:
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(data):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def run_config(
    *,
    loss_fn: Any,
    data: Any,
    iterator: bool,
    steps: int,
    key: Any,
    batch_size: int | None,
    ensemble: bool,
    eval_every: int,
) -> dict[str, Any]:
    """What must agree between a run and the one that wrote a checkpoint to resume it."""
    return {
        "steps": steps,
        "batch_size": batch_size,
        "ensemble": ensemble,
        "eval_every": eval_every,
        "key": _key_data(key),
        # The qualified name only: the same script run as `__main__` or imported is one run.
        "loss_fn": getattr(loss_fn, "__qualname__", type(loss_fn).__qualname__),
        "data": "an iterator" if iterator else describe(data),
        "data_sha256": None if iterator else _data_checksum(data),
    }


def _checkpoints(directory: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
    found = [(_NAME.fullmatch(p.name), p) for p in directory.iterdir()]
    return sorted((int(m.group(1)), p) for m, p in found if m)


def prepare(directory: pathlib.Path, resume: bool) -> None:
    """Create `directory`; drop temporary files of killed writes (and, unless `resume`,
    the checkpoints of an earlier run)."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(
            f"fit: `checkpoint_dir` {str(directory)!r} is a file, not a folder. Pass a folder "
            "(created if missing) that holds only this run's checkpoints."
        )
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob(".step-*.ckpt.*.tmp"):
        path.unlink(missing_ok=True)
    if not resume:
        for _, path in _checkpoints(directory):
            path.unlink()


def write(
    directory: pathlib.Path,
    step: int,
    model: Any,
    opt_state: Any,
    history: History,
    config: dict[str, Any],
) -> pathlib.Path:
    """Write the state after `step` completed steps; keep the two newest checkpoints."""
    layout, history_bytes = history_to_bytes(history)
    header = {
        "neurde_version": __version__,
        "hyperparams": {},
        "model": {"class": type(model).__name__, "config": describe(model)},
        "opt_state": {"class": type(opt_state).__name__, "config": describe(opt_state)},
        "run": config,
        "step": step,
        "history": layout,
    }
    segments = {
        "model": _serialise(model),
        "opt_state": _serialise(opt_state),
        "history": history_bytes,
    }
    path = path_of(directory, step)
    _write(path, header, segments)
    for _, old in _checkpoints(directory)[:-_KEEP]:
        old.unlink(missing_ok=True)
    return path


def path_of(directory: pathlib.Path, step: int) -> pathlib.Path:
    """The file of the checkpoint after `step` completed steps."""
    return directory / f"step-{step:09d}.ckpt"


def _mismatch(path: pathlib.Path, step: int, lines: list[str]) -> ValueError:
    return ValueError(
        f"fit: `checkpoint_dir` holds {str(path)!r} (step {step}) of another run: it differs "
        f"from this call in {len(lines)} place(s) (stored -> given):\n"
        f"{format_differences(lines)}\nPass the same arguments to resume that run, another "
        "`checkpoint_dir` for a new run, or `resume=False` to delete its checkpoints and "
        "start over."
    )


def restore(
    directory: pathlib.Path, config: dict[str, Any], model: Any, opt_state: Any
) -> tuple[Any, Any, int, History, pathlib.Path] | None:
    """`(model, opt_state, step, history, path)` from the newest readable checkpoint, or
    `None` when there is none. A run with another configuration is refused."""
    for step, path in reversed(_checkpoints(directory)):
        try:
            header, segments = _read(path, "fit")
        except ValueError as e:
            warnings.warn(f"{e} Resuming from the checkpoint before it.", stacklevel=3)
            continue
        lines = [
            f"{name}: {header['run'].get(name)!r} -> {value!r}"
            for name, value in config.items()
            if header["run"].get(name) != value
        ]
        lines += differences(header["model"]["config"], describe(model), "model")
        lines += differences(header["opt_state"]["config"], describe(opt_state), "opt_state")
        if lines:
            raise _mismatch(path, step, lines)
        return (
            _deserialise("fit", path, segments["model"], model),
            _deserialise("fit", path, segments["opt_state"], opt_state),
            step,
            history_from_bytes(header["history"], segments["history"]),
            path,
        )
    return None


__all__ = ["path_of", "prepare", "restore", "run_config", "write"]
