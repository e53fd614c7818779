"""`fit`: a training loop over Optax with history, progress and a guard on the loss."""

import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import PRNGKeyArray

from ..data.batching import minibatches
from .ensemble import ensemble_init_optimizer, make_ensemble_step
from .step import LossFn, init_optimizer, make_step


@dataclasses.dataclass
class History:
    """What `fit` recorded, one entry per step unless stated.

    - `loss`: loss values (arrays of shape `(n,)` for ensembles).
    - `time`: wall-clock seconds of each step; the first includes compilation.
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


class TrainingError(RuntimeError):
    """Training stopped at `step`; `model` and `opt_state` are the last good ones."""

    def __init__(self, message: str, *, step: int, model: Any, opt_state: Any, history: History):
        super().__init__(message)
        self.step = step
        self.model = model
        self.opt_state = opt_state
        self.history = history


class NonFiniteLossError(TrainingError):
    """The loss became NaN or inf; the parameters that last gave a finite loss are kept."""


class FitResult(NamedTuple):
    """`(model, opt_state, history)` as returned by `fit`."""

    model: Any
    opt_state: Any
    history: History


@functools.lru_cache(maxsize=32)
def _compiled_step(loss_fn: LossFn, optim: optax.GradientTransformation, ensemble: bool) -> Any:
    # One compiled step per (loss, optimizer): resuming `fit` (curriculum phases, more steps)
    # with the same loss and optimizer reuses the compilation instead of recompiling.
    return make_ensemble_step(loss_fn, optim) if ensemble else make_step(loss_fn, optim)


def _batches(data: Any, batch_size: int | None, key: PRNGKeyArray) -> Iterator[Any]:
    if batch_size is None:
        while True:
            yield data
    yield from minibatches(data, batch_size, key=key)


def _as_iterator(data: Any, batch_size: int | None, key: PRNGKeyArray) -> Iterator[Any]:
    if isinstance(data, Iterator):
        if batch_size is not None:
            raise ValueError(
                "fit: `batch_size` applies to array data; got an iterator of batches as "
                "well. Drop `batch_size`, or pass the arrays instead of the iterator."
            )
        return data
    if isinstance(data, Iterable) and not isinstance(
        data, (tuple, list, dict, jax.Array, np.ndarray)
    ):
        return iter(data)
    return _batches(data, batch_size, key)


def _progress_bar(steps: int, enabled: bool) -> Any:
    """A tqdm bar over the steps; sparse when stderr is not a terminal (a log file)."""
    if not enabled:
        return range(steps)
    from tqdm.auto import tqdm  # imported here so `import neurde` does not load it

    # Redirected to a file, every refresh is kept as text: refresh every 30 s instead of
    # 10 times a second, so a log holds a few lines per minute rather than hundreds.
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(
        range(steps),
        desc="fit",
        dynamic_ncols=interactive,
        mininterval=0.1 if interactive else 30.0,
        ascii=not interactive,
    )


def _record(history: History, loss: Any, aux: dict, seconds: float) -> None:
    history.loss.append(loss)
    history.time.append(seconds)
    for name, value in aux.items():
        history.metrics.setdefault(name, []).append(np.asarray(value))


def fit(
    model: Any,
    loss_fn: LossFn,
    data: Any,
    *,
    steps: int,
    key: PRNGKeyArray,
    optim: optax.GradientTransformation | None = None,
    batch_size: int | None = None,
    opt_state: Any = None,
    ensemble: bool = False,
    callback: Callable[[int, Any], Any] | None = None,
    eval_every: int = 100,
    progress: bool = True,
) -> FitResult:
    """Train `model` to minimize `loss_fn` with Optax.

    Each step draws a minibatch, a fresh key (`fold_in(key, step)`), computes the loss and
    its gradient with respect to `neurde.trainable(model)` and applies `optim`. The run is
    deterministic for a fixed `key`. A non-finite loss stops training with
    `NonFiniteLossError`, which names the step and carries the last good model; any other
    failure inside a step is re-raised as `TrainingError` with the same information.

    **Arguments:**

    - `model`: the model (or a stacked ensemble with `ensemble=True`).
    - `loss_fn`: `loss(model, batch, key) -> scalar` or `(scalar, aux_dict)`; aux entries
      such as `"nfe"` are recorded and shown in the progress bar.
    - `data`: a PyTree of arrays with a shared leading axis (minibatched with `batch_size`,
      or used whole when `batch_size=None`), or an iterator of ready batches.
    - `steps`: number of optimization steps.
    - `key`: randomness for minibatches and the loss.
    - `optim`: Optax transformation (default `optax.adam(1e-3)`).
    - `batch_size`: minibatch size for array data.
    - `opt_state`: resume from this optimizer state.
    - `ensemble`: train every member of a stacked ensemble in one vmapped step.
    - `callback`: `callback(step, model)`, called every `eval_every` steps and after the
      last; its return value is stored in `history.evals`.
    - `progress`: show a tqdm progress bar (refreshed every 30 s when stderr is not a
      terminal, so logs stay short).

    **Returns:**

    `FitResult(model, opt_state, history)`.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"fit: `steps` must be an integer >= 1, got {steps!r}.")
    if not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"fit: `eval_every` must be an integer >= 1, got {eval_every!r}.")
    optim = optax.adam(1e-3) if optim is None else optim
    step_fn = _compiled_step(loss_fn, optim, ensemble)
    init = ensemble_init_optimizer if ensemble else init_optimizer
    if opt_state is None:
        opt_state = init(optim, model)
    data_key, step_key = jr.split(key)
    batches = _as_iterator(data, batch_size, data_key)
    history = History()
    bar = _progress_bar(steps, progress)
    for i in bar:
        try:
            batch = next(batches)
        except StopIteration:
            raise ValueError(
                f"fit: `data` ran out after {i} batches but `steps={steps}`. Pass at least "
                "`steps` batches, fewer `steps`, or arrays (minibatched indefinitely)."
            ) from None
        start = time.perf_counter()
        try:
            new_model, new_opt_state, loss, aux = step_fn(
                model, opt_state, batch, jr.fold_in(step_key, i)
            )
            loss = np.asarray(jax.block_until_ready(loss))
        except Exception as e:
            raise TrainingError(
                f"fit: step {i} failed: {type(e).__name__}: {e}",
                step=i,
                model=model,
                opt_state=opt_state,
                history=history,
            ) from e
        if not np.all(np.isfinite(loss)):
            raise NonFiniteLossError(
                f"fit: the loss became non-finite ({loss}) at step {i}. The returned error's "
                "`.model` holds the last parameters with a finite loss. Try a smaller learning "
                "rate, gradient clipping (`optax.clip_by_global_norm`), or tighter solver "
                "tolerances. (If EQX_ON_ERROR=nan is set, as `neurde run` does for cached "
                "compilation, a failed solve also shows up as NaN: rerun with --checks.)",
                step=i,
                model=model,
                opt_state=opt_state,
                history=history,
            )
        model, opt_state = new_model, new_opt_state
        _record(history, loss, aux, time.perf_counter() - start)
        if progress:
            postfix = {"loss": f"{float(np.mean(loss)):.4g}"}
            if "nfe" in aux:
                postfix["nfe"] = f"{float(jnp.mean(aux['nfe'])):.0f}"
            bar.set_postfix(postfix, refresh=False)
        if callback is not None and ((i + 1) % eval_every == 0 or i + 1 == steps):
            history.evals.append((i + 1, callback(i + 1, model)))
    return FitResult(model, opt_state, history)
