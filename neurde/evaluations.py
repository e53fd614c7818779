"""Counting the vector-field evaluations of a whole computation, gradient included.

`solve(...).stats["nfe"]` counts the forward solve's evaluations from Diffrax's statistics.
The backward pass of a gradient has its own: backprop re-evaluates checkpointed steps and
takes one vector-Jacobian product (VJP) per stage; `diffrax.BacksolveAdjoint` solves an
adjoint ODE whose every evaluation is a VJP; `neurde.Reversible` rebuilds each state by two
base steps. Those counts are not in any statistic, so `count_evaluations` counts them as
they happen: while it traces a function, every neurde solve evaluates its drift through a
counting wrapper (a custom VJP whose forward and backward rules each report to the host).
"""

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from .problem import Problem


@dataclasses.dataclass
class _Tally:
    forward: int = 0
    vjp: int = 0
    solves: int = 0


_ACTIVE: list[_Tally] = []  # the counts being taken, innermost last
_LOCK = threading.Lock()


def _tick(kind: str, probe: Any) -> None:
    del probe
    with _LOCK:
        if _ACTIVE:
            tally = _ACTIVE[-1]
            setattr(tally, kind, getattr(tally, kind) + 1)


def _report(kind: str, tree: Any) -> None:
    """Report one evaluation. The callback reads one entry of `tree` (the state, or the
    cotangent), so it runs where the evaluation runs: a callback that reads nothing would be
    hoisted out of a differentiated `lax.scan` as loop-invariant, and under `jax.vmap` it is
    called once per example, as the evaluation is."""
    probe = jnp.ravel(jax.tree.leaves(tree)[0])[:1]
    jax.debug.callback(functools.partial(_tick, kind), probe)


def _evaluate(inputs: tuple[Any, Any, Any, Any]) -> Any:
    fn, t, y, args = inputs
    return fn(t, y, args)


@eqx.filter_custom_vjp
def _counted_call(inputs: tuple[Any, Any, Any, Any]) -> Any:
    _report("forward", inputs[2])
    return _evaluate(inputs)


@_counted_call.def_fwd
def _counted_fwd(perturbed: Any, inputs: tuple[Any, Any, Any, Any]) -> tuple[Any, Any]:
    del perturbed
    _report("forward", inputs[2])
    out, pullback = eqx.filter_vjp(_evaluate, inputs)
    return out, (pullback, out)


@_counted_call.def_bwd
def _counted_bwd(
    residuals: Any, cotangent: Any, perturbed: Any, inputs: tuple[Any, Any, Any, Any]
) -> Any:
    del perturbed, inputs
    pullback, out = residuals
    # Equinox passes `None` for outputs without a cotangent; the pullback wants zeros.
    cotangent = jax.tree.map(
        lambda c, o: jnp.zeros_like(o) if c is None else c,
        cotangent,
        out,
        is_leaf=lambda c: c is None,
    )
    _report("vjp", cotangent)
    (grads,) = pullback(cotangent)
    return grads


class _Counted(eqx.Module):
    """`fn(t, y, args)`, each evaluation and each VJP reported to the active count."""

    fn: Callable[..., Any]

    def __call__(self, t: Any, y: Any, args: Any) -> Any:
        return _counted_call((self.fn, t, y, args))


def counted(problem: Problem) -> Problem:
    """`problem` with its drift counted, while `count_evaluations` traces; else unchanged."""
    if not _ACTIVE:
        return problem
    if isinstance(problem.solver, diffrax.AbstractImplicitSolver):
        raise ValueError(
            f"count_evaluations: {problem.owner} is solved with the implicit solver "
            f"{type(problem.solver).__name__}, whose Newton iterations differentiate the field "
            "forward-mode; counting wraps the field in a custom VJP, which has no forward "
            "mode. Count with an explicit solver (e.g. `diffrax.Tsit5()`)."
        )
    _tick("solves", None)
    augmented = None if problem.augmented is None else _Counted(problem.augmented)
    return dataclasses.replace(problem, drift=_Counted(problem.drift), augmented=augmented)


@contextlib.contextmanager
def _counting(tally: _Tally) -> Iterator[None]:
    with _LOCK:
        _ACTIVE.append(tally)
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE.remove(tally)


def count_evaluations(fn: Callable[..., Any]) -> Callable[..., tuple[Any, dict[str, int]]]:
    r"""Count the drift evaluations of every neurde solve in `fn`, backward pass included.

    `count_evaluations(fn)(*args, **kwargs)` calls `fn` and returns `(out, counts)`, where
    `counts` holds Python integers:

    - `"forward"`: evaluations of the drift $f(t, y, \text{args})$ (with RNODE's extras, of
      the drift and its integrands together), in the forward solve and in any recomputation
      by the backward pass (backprop's checkpointed steps, the states `neurde.Reversible`
      rebuilds, the state `diffrax.BacksolveAdjoint` solves backwards);
    - `"vjp"`: vector-Jacobian products of the drift, which is the backward pass's own work
      (zero when `fn` takes no gradient);
    - `"solves"`: how many solves this call traced (each once, however many times it
      runs; 0 when it reused a program compiled by an earlier count).

    The counts are of evaluations of the field on the states it is called with. In batch
    mode (`neurde.batched`) the field is called on the whole batch, so the counts are the
    batch's shared counts. Under `jax.vmap` each example's evaluation counts once, so the
    counts are summed over the batch: divide by the batch size for each example's count.
    That per-example count is what each example costs, which under `vmap` is the slowest
    example's count (the batched loop steps every example until all are done);
    `solve(...).stats["nfe"]`, by contrast, is each example's own forward count, the
    evaluations its solution needed.

    Each evaluation reports to the host (`jax.debug.callback`), which is slow: use this to
    measure, not in training. Only the solves that `fn` traces while counting are counted:
    a function compiled earlier (e.g. a `jax.jit` function already called with the same
    shapes) reuses its uncounted program, which gives a `ValueError` (pass a fresh function,
    or call `jax.clear_caches()` first). The drift is counted through a custom VJP, so
    forward-mode differentiation of the solve (`jax.jvp`, `jax.jacfwd`, implicit solvers'
    Newton iterations) is not available while counting.

    **Arguments:**

    - `fn`: a function that calls neurde models (e.g. `jax.grad(loss)`, or a `jax.jit` of
      it defined for the count).

    **Returns:**

    A function with `fn`'s arguments that returns `(fn(...), counts)`.

    **Example:**

    ```python
    grads, counts = neurde.count_evaluations(jax.grad(loss))(model, batch)
    counts["forward"], counts["vjp"]
    ```
    """
    if not callable(fn):
        raise TypeError(
            f"count_evaluations: `fn` must be callable (e.g. `jax.grad(loss)`), got an "
            f"object of type {type(fn).__name__}."
        )

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, int]]:
        tally = _Tally()
        with _counting(tally):
            out = fn(*args, **kwargs)
            jax.block_until_ready(out)
            jax.effects_barrier()
        if tally.solves == 0 and tally.forward == 0:
            raise ValueError(
                f"count_evaluations: calling {getattr(fn, '__name__', 'fn')} traced no neurde "
                "solve, so there is nothing to count. Either it solves no neurde model, or it "
                "reused a program compiled before the count (a `jax.jit` function already "
                "called with these shapes): pass a fresh function, or call "
                "`jax.clear_caches()` first."
            )
        return out, {"forward": tally.forward, "vjp": tally.vjp, "solves": tally.solves}

    return wrapper


__all__ = ["count_evaluations", "counted"]
