"""`fit`: a training loop over Optax with history, progress, checkpoints and resume, and a
guard on the loss and the gradients that says what went wrong."""

import functools
import pathlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray

from ..data._checks import prng_key
from . import _checks, resume as _resume
from ._processes import barrier, gathered, is_writer, to_host
from ._sharded_step import per_device_loss, sharded_step
from .batches import batch_stream, is_iterator
from .ensemble import ensemble_init_optimizer, make_checked_ensemble_step, stacked_size
from .forensics import NonFiniteGradientError, NonFiniteLossError, TrainingError, check_step
from .history import History, jsonable
from .sharding import Sharding, as_sharding, check_batch, check_members
from .step import LossFn, gradient_paths, init_optimizer, step_once_checked


class FitResult(NamedTuple):
    """`(model, opt_state, history)` as returned by `fit`."""

    model: Any
    opt_state: Any
    history: History


@functools.lru_cache(maxsize=32)
def _cached_step(
    loss_fn: LossFn, optim: optax.GradientTransformation, ensemble: bool, mesh: Sharding | None
) -> Any:
    # One compiled step per (loss, optimizer): resuming `fit` (curriculum phases, more steps)
    # with the same loss and optimizer reuses the compilation instead of recompiling.
    if ensemble:
        return make_checked_ensemble_step(loss_fn, optim, mesh)
    step = functools.partial(step_once_checked, per_device_loss(loss_fn, mesh), optim)
    if mesh is not None:
        return sharded_step(step, mesh, ensemble=False, batch_axis=None)
    return eqx.filter_jit(step)


def _compiled_step(
    loss_fn: LossFn, optim: optax.GradientTransformation, ensemble: bool, mesh: Sharding | None
) -> Any:
    try:
        hash((loss_fn, optim))
    except TypeError:  # e.g. a loss module holding arrays: compiled per call instead
        return _cached_step.__wrapped__(loss_fn, optim, ensemble, mesh)
    return _cached_step(loss_fn, optim, ensemble, mesh)


def _progress_bar(start: int, steps: int, enabled: bool) -> Any:
    """A tqdm bar over the steps; sparse when stderr is not a terminal (a log file)."""
    if not enabled:
        return range(start, steps)
    from tqdm.auto import tqdm  # imported here so `import neurde` does not load it

    # Redirected to a file, every refresh is kept as text: refresh every 30 s instead of
    # 10 times a second, so a log holds a few lines per minute rather than hundreds.
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(
        range(start, steps),
        desc="fit",
        initial=start,
        total=steps,
        dynamic_ncols=interactive,
        mininterval=0.1 if interactive else 30.0,
        ascii=not interactive,
    )


def _record(history: History, loss: Any, aux: dict, seconds: float) -> None:
    history.loss.append(loss)
    history.time.append(seconds)
    for name, value in aux.items():
        # A `diffrax.RESULTS` item (`solution.result`) is recorded as its integer code.
        history.metrics.setdefault(name, []).append(np.asarray(getattr(value, "_value", value)))


def _check_arguments(fn: str, model: Any, loss_fn: Any, a: dict[str, Any]) -> None:
    _checks.function(fn, "loss_fn", loss_fn, "loss(model, batch, key)")
    _checks.integer(fn, "steps", a["steps"], 1)
    prng_key(fn, a["key"])
    if a["optim"] is not None:
        _checks.optimizer(fn, a["optim"])
    if a["batch_size"] is not None:
        _checks.integer(fn, "batch_size", a["batch_size"], 1)
    for name in ("ensemble", "progress", "resume"):
        _checks.flag(fn, name, a[name])
    _checks.function(fn, "callback", a["callback"], "callback(step, model)", optional=True)
    _checks.integer(fn, "eval_every", a["eval_every"], 1)
    _checks.path_or_none(fn, "checkpoint_dir", a["checkpoint_dir"])
    if a["checkpoint_every"] is not None:
        _checks.integer(fn, "checkpoint_every", a["checkpoint_every"], 1)
        if a["checkpoint_dir"] is None:
            raise ValueError(
                f"fit: `checkpoint_every={a['checkpoint_every']!r}` needs `checkpoint_dir`, "
                "the folder to write the checkpoints to."
            )
    if a["ensemble"]:
        fix = (
            "Build an ensemble with `neurde.make_ensemble(make_model, n, key=key)`, or pass "
            "`ensemble=False` to train a single model."
        )
        stacked_size("fit(ensemble=True)", "model", model, fix)
    _checks.has_parameters(fn, model)
    _check_mesh(fn, model, a)


def _check_mesh(fn: str, model: Any, a: dict[str, Any]) -> Sharding | None:
    sharding = as_sharding(fn, a["mesh"], a["ensemble"])
    if sharding is None:
        return None
    if a["ensemble"]:
        check_members(fn, sharding, "model", stacked_size(fn, "model", model, ""))
    if a["batch_size"] is not None:
        k = sharding.axis_size(sharding.data)
        if a["batch_size"] % k:
            raise ValueError(
                f"{fn}: `batch_size={a['batch_size']}` cannot be split evenly over the "
                f"{k} devices of the mesh axis {sharding.data!r}. Use a batch size "
                f"divisible by {k}, e.g. {max(k, a['batch_size'] // k * k)}."
            )
    elif not is_iterator(a["data"]):
        check_batch(fn, sharding, "data", a["data"])
    return sharding


def _initial_opt_state(
    model: Any, optim: optax.GradientTransformation, opt_state: Any, ensemble: bool
) -> Any:
    fresh = (ensemble_init_optimizer if ensemble else init_optimizer)(optim, model)
    if opt_state is None:
        return fresh
    init = "neurde.ensemble_init_optimizer" if ensemble else "neurde.init_optimizer"
    fix = f"Pass the state of the same optimizer, from `{init}(optim, model)` or an earlier fit."
    if ensemble:
        n = stacked_size("fit", "model", model, "")
        _checks.member_axis("fit", "opt_state", opt_state, n, 0, fix)
    _checks.same_structure("fit", "opt_state", opt_state, fresh, fix)
    return opt_state


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
    checkpoint_dir: str | pathlib.Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    mesh: Sharding | Mesh | None = None,
) -> FitResult:
    """Train `model` to minimize `loss_fn` with Optax; checkpointed and resumable.

    With `data_key, step_key = jax.random.split(key)`, step `i` (counted from 0) uses the
    key `fold_in(step_key, i)` and, for array data with a `batch_size`, the minibatch
    `i % m` of epoch `i // m` (`m` batches per epoch, the permutation of epoch `e` drawn
    from `fold_in(data_key, e)`, as `neurde.data.minibatches` does). Both are functions of
    `(key, i)` alone, so a run is deterministic for a fixed `key`, and a resumed run is
    bit-identical to an uninterrupted one.

    Each step computes the loss and its gradient with respect to `neurde.trainable(model)`
    and applies `optim`. A step whose loss or any gradient is not finite is refused:
    `NonFiniteLossError` (the forward pass failed) or `NonFiniteGradientError` (only the
    backward pass) names the step, the parameter leaves with non-finite gradients, the
    solver outcome if the loss's aux reports one as `"result"`, and the last checkpoint,
    and carries the last good model; any other failure inside a step is re-raised as
    `TrainingError` with the same information.

    **Arguments:**

    - `model`: the model (or a stacked ensemble with `ensemble=True`).
    - `loss_fn`: `loss(model, batch, key) -> scalar` or `(scalar, aux_dict)`; aux entries
      such as `"nfe"` are recorded and shown in the progress bar; `"result"` (a solve's
      `solution.result`) is recorded as its integer code and reported on a failure.
    - `data`: a PyTree of arrays with a shared leading axis (minibatched with `batch_size`,
      or used whole when `batch_size=None`), or an iterator of ready batches.
    - `steps`: total number of optimization steps (including those of a resumed run).
    - `key`: randomness for minibatches and the loss.
    - `optim`: Optax transformation (default `optax.adam(1e-3)`).
    - `batch_size`: minibatch size for array data.
    - `opt_state`: start from this optimizer state (of `optim`, for this model).
    - `ensemble`: train every member of a stacked ensemble in one vmapped step.
    - `callback`: `callback(step, model)`, called every `eval_every` steps and after the
      last; its return value is stored in `history.evals` (with checkpoints, it must be
      JSON data: numbers, strings, lists, dicts or arrays, restored as lists).
    - `progress`: show a tqdm progress bar (refreshed every 30 s when stderr is not a
      terminal, so logs stay short).
    - `checkpoint_dir`: a folder for this run's checkpoints, or `None` for none. Every
      `checkpoint_every` steps and after the last, the model, optimizer state, step and
      history are written atomically to `step-NNNNNNNNN.ckpt` (the two newest are kept).
    - `checkpoint_every`: steps between checkpoints (default 100; only with
      `checkpoint_dir`).
    - `resume`: when `checkpoint_dir` holds a checkpoint, continue from the newest one (a
      finished run returns at once). Its run must match this call: `steps`, `batch_size`,
      `key`, `ensemble`, `eval_every`, the loss function's name, the data's shapes and
      checksum, and the configuration of the model and optimizer state; any difference
      is a `ValueError` listing them, never a silent mix of two runs. (The optimizer's
      hyperparameters, such as the learning rate, cannot be read from its state and are
      not checked.) An iterator `data` is advanced past the batches already used, so pass
      the same sequence from its start. `resume=False` deletes the folder's checkpoints
      and starts over.
    - `mesh`: train on a device mesh (see `neurde.Sharding`): data parallel (each batch
      split over the `data` axis, parameters replicated), ensemble parallel (with
      `ensemble=True`, members split over the `members` axis), or both. The loss is the
      mean over the whole batch, so the run equals the unsharded one up to floating-point
      rounding; it is compiled once. With several processes (`jax.distributed`) every
      process calls `fit` with the same arguments and a mesh of all devices: array `data`
      is held by every process, which moves only its devices' rows; an iterator yields this
      process's share of each batch. Only process 0 writes checkpoints and shows progress.

    **Returns:**

    `FitResult(model, opt_state, history)`.
    """
    arguments = dict(locals())
    _check_arguments("fit", model, loss_fn, arguments)
    optim = optax.adam(1e-3) if optim is None else optim
    opt_state = _initial_opt_state(model, optim, opt_state, ensemble)
    sharding = _check_mesh("fit", model, arguments)
    checkpoint_every = 100 if checkpoint_every is None else checkpoint_every
    run = _Run(model, opt_state, History(), 0, None, None, {})
    if checkpoint_dir is not None:
        run.directory = pathlib.Path(checkpoint_dir)
        if is_writer():
            _resume.prepare(run.directory, resume)
        barrier("neurde.fit: checkpoint folder ready")
        run.config = _resume.run_config(
            loss_fn=loss_fn,
            data=data,
            iterator=is_iterator(data),
            **{k: arguments[k] for k in ("steps", "key", "batch_size", "ensemble", "eval_every")},
        )
        restored = _resume.restore(run.directory, run.config, model, opt_state)
        if restored is not None:
            run.model, run.opt_state, run.step, run.history, run.checkpoint = restored
    data_key, step_key = jr.split(key)
    batches = batch_stream(data, batch_size, data_key, run.step)
    if sharding is not None and is_iterator(data) and jax.process_count() > 1:
        batches = _process_shares(batches, sharding, ensemble)
    step_fn = _compiled_step(loss_fn, optim, ensemble, sharding)
    paths = gradient_paths(model)
    progress = progress and is_writer()
    bar = _progress_bar(run.step, steps, progress)
    for i in bar:
        _one_step(run, step_fn, batches, jr.fold_in(step_key, i), i, steps, paths)
        if progress:
            _show(bar, run.history)
        if callback is not None and ((i + 1) % eval_every == 0 or i + 1 == steps):
            value = callback(i + 1, run.model)
            _check_eval(value, run.directory is not None)
            run.history.evals.append((i + 1, value))
        if run.directory is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == steps):
            run.checkpoint = _write_checkpoint(run, i + 1)
    return FitResult(run.model, run.opt_state, run.history)


def _write_checkpoint(run: "_Run", step: int) -> pathlib.Path:
    # Every process takes part in gathering arrays spread over several of them; only
    # process 0 writes, and the others wait for the file before going on.
    assert run.directory is not None
    model, opt_state = gathered((run.model, run.opt_state))
    if is_writer():
        path = _resume.write(run.directory, step, model, opt_state, run.history, run.config)
    else:
        path = _resume.path_of(run.directory, step)
    barrier(f"neurde.fit: checkpoint {step} written")
    return path


def _process_shares(batches: Iterator, sharding: Sharding, ensemble: bool) -> Iterator:
    """Global batches from each process's share (several processes, iterator data)."""
    spec = sharding.spec(sharding.data)
    for local in batches:
        yield jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(spec, np.asarray(x)), local
        )


class _Run:
    """The mutable state of a `fit` call."""

    def __init__(self, model, opt_state, history, step, directory, checkpoint, config):
        self.model, self.opt_state, self.history, self.step = model, opt_state, history, step
        self.directory: pathlib.Path | None = directory
        self.checkpoint: pathlib.Path | None = checkpoint
        self.config: dict[str, Any] = config


def _one_step(
    run: _Run, step_fn: Any, batches: Iterator, key: Any, i: int, steps: int, paths: list[str]
) -> None:
    try:
        batch = next(batches)
    except StopIteration:
        raise ValueError(
            f"fit: `data` ran out after {i} batches but `steps={steps}`. Pass at least "
            "`steps` batches, fewer `steps`, or arrays (minibatched indefinitely)."
        ) from None
    start = time.perf_counter()
    try:
        model, opt_state, loss, aux, finite = step_fn(run.model, run.opt_state, batch, key)
        # NumPy copies, gathered from every process when spread over several; a
        # `diffrax.RESULTS` item (`solution.result`) becomes its integer code.
        aux = {k: getattr(v, "_value", v) for k, v in aux.items()}
        loss, finite, aux = to_host((jax.block_until_ready(loss), finite, aux))
    except Exception as e:
        where = (
            ""
            if run.checkpoint is None
            else f" The last good checkpoint is {str(run.checkpoint)!r}."
        )
        raise TrainingError(
            f"fit: step {i} failed: {type(e).__name__}: {e}{where}",
            step=i,
            model=run.model,
            opt_state=run.opt_state,
            history=run.history,
            checkpoint=run.checkpoint,
        ) from e
    check_step(
        step=i,
        loss=loss,
        finite=np.asarray(finite),
        paths=paths,
        aux=aux,
        checkpoint=run.checkpoint,
        model=run.model,
        opt_state=run.opt_state,
        history=run.history,
    )
    run.model, run.opt_state = model, opt_state
    _record(run.history, loss, aux, time.perf_counter() - start)


def _show(bar: Any, history: History) -> None:
    postfix = {"loss": f"{float(np.mean(history.loss[-1])):.4g}"}
    if "nfe" in history.metrics:
        postfix["nfe"] = f"{float(jnp.mean(history.metrics['nfe'][-1])):.0f}"
    bar.set_postfix(postfix, refresh=False)


def _check_eval(value: Any, checkpointing: bool) -> None:
    if not checkpointing:
        return
    try:
        jsonable(value)
    except TypeError as e:
        raise TypeError(
            f"fit: with `checkpoint_dir`, `callback` must return JSON data (numbers, strings, "
            f"lists, dicts, arrays) so that the history can be checkpointed; got {value!r} "
            f"({e}). Return e.g. a float or a dict of floats."
        ) from None


__all__ = [
    "FitResult",
    "History",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "TrainingError",
    "fit",
]
