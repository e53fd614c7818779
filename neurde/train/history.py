"""`History`: what `fit` records, and its exact round trip through a checkpoint."""

import dataclasses
import io
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass
class History:
    """What `fit` recorded, one entry per step unless stated.

    - `loss`: loss values (arrays of shape `(n,)` for ensembles).
    - `time`: wall-clock seconds of each step; the first includes compilation (and the
      first after a resume, its recompilation).
    - `metrics`: every entry of the loss's aux dict (e.g. `"nfe"`) as lists over steps.
    - `evals`: `(step, value)` pairs from the evaluation callback.
    """

    loss: list[Any] = dataclasses.field(default_factory=list)
    time: list[float] = dataclasses.field(default_factory=list)
    metrics: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    evals: list[tuple[int, Any]] = dataclasses.field(default_factory=list)

    @property
    def compile_time(self) -> float:
        """Seconds of the first step minus a typical later step: compilation, roughly."""
        if len(self.time) < 2:
            return self.time[0] if self.time else 0.0
        # Zero when the step was compiled by an earlier `fit` (the compiled step is cached).
        return max(0.0, self.time[0] - float(np.median(self.time[1:])))


def jsonable(value: Any) -> Any:
    """`value` as JSON data (arrays as nested lists), or `TypeError`."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return np.asarray(value).tolist()
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: jsonable(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} is not JSON data")


def history_to_bytes(history: History) -> tuple[dict[str, Any], bytes]:
    """A JSON description and the arrays (`.npy` records, no pickle) of `history`."""
    arrays = {"loss": np.stack(history.loss), "time": np.asarray(history.time, np.float64)}
    arrays |= {f"metrics/{k}": np.stack(v) for k, v in history.metrics.items()}
    buffer = io.BytesIO()
    for array in arrays.values():
        np.save(buffer, array, allow_pickle=False)
    evals = [[step, jsonable(value)] for step, value in history.evals]
    return {"arrays": list(arrays), "evals": evals}, buffer.getvalue()


def history_from_bytes(description: dict[str, Any], data: bytes) -> History:
    """The inverse of `history_to_bytes`: equal entries, of the same types."""
    buffer = io.BytesIO(data)
    arrays = {name: np.load(buffer, allow_pickle=False) for name in description["arrays"]}
    # `a[i, ...]` keeps 0-d entries as arrays, as `fit` records them.
    rows = {name: [a[i, ...] for i in range(a.shape[0])] for name, a in arrays.items()}
    return History(
        loss=rows["loss"],
        time=[float(t) for t in arrays["time"]],
        metrics={k[len("metrics/") :]: v for k, v in rows.items() if k.startswith("metrics/")},
        evals=[(int(step), value) for step, value in description["evals"]],
    )


__all__ = ["History", "history_from_bytes", "history_to_bytes", "jsonable"]
