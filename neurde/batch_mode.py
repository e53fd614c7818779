r"""Batch mode: one solve over a whole batch, as one state, with shared step-size control.

A neurde model takes one example, and `jax.vmap(model)` batches it. With constant steps that
costs nothing. With adaptive steps it changes the computation: under `vmap` every example
keeps its own step sizes, the batched loop runs until the slowest example is done, and the
continuous adjoint carries one parameter-sized adjoint state per example. `Batched` solves
the batch instead as one state $Y = (y_1, \dots, y_B)$ of the product system

$$dy_b = f(t, y_b, \text{args}_b)\,dt + g(t, y_b, \text{args}_b)\,dW^b_t,
\qquad b = 1, \dots, B,$$

with the model's own (one-example) drift and diffusion vmapped over the batch axis: one
step-size sequence for the batch (the error norm, Diffrax's RMS norm, taken over the whole
batch), one adjoint state for `adjoint="adjoint"`, one Brownian path object of shape
`(B, d)` whose examples have independent increments. It is how libraries built on batched
tensors (torchdiffeq, torchsde) solve a minibatch; benchmarks/batch_mode.py measures it
against the same computation written directly with Diffrax, and against `jax.vmap`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._solve import integrate
from ._types import Args, Input, MaybeKey, SaveTimes
from .model import AbstractContinuousModel, AbstractModel, AbstractWrapper
from .problem import Problem
from .solution import ModelSolution


class _Vmapped(eqx.Module):
    """`fn(t, y, args)` of one example, applied to a batch of states (and of args).

    A module, not a closure, so the parameters of `fn` stay visible to adjoints such as
    `diffrax.BacksolveAdjoint` (which differentiates the terms as a PyTree).
    """

    fn: Callable[..., Any]
    args_axes: Any = eqx.field(static=True)

    def __call__(self, t: Any, y: Any, args: Any) -> Any:
        return jax.vmap(self.fn, in_axes=(None, 0, self.args_axes))(t, y, args)


def _batch_size(owner: str, y0: Any) -> int:
    leaves = jax.tree.leaves(y0)
    shapes = jax.tree.map(jnp.shape, y0)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError(
            f"{owner}: batch mode needs a batch of initial states, each leaf of `y0` with a "
            f"leading batch axis (shape (B, ...)); got {shapes}. For one example call the "
            "model itself: `batched.model(y0)`."
        )
    sizes = {jnp.shape(x)[0] for x in leaves}
    if len(sizes) != 1:
        raise ValueError(
            f"{owner}: the leaves of `y0` have different batch sizes {sorted(sizes)} (shapes "
            f"{shapes}); every leaf needs the same leading batch axis."
        )
    return sizes.pop()


def _check_args(owner: str, args: Any, axes: Any, y0: Any) -> None:
    """Per-example `args` (`args_axes` not `None`) have the batch size of `y0`."""
    if axes is None:
        return
    try:
        jax.eval_shape(jax.vmap(lambda y, a: 0, in_axes=(0, axes)), y0, args)
    except ValueError as e:
        sizes = jax.tree.map(jnp.shape, args)
        raise ValueError(
            f"{owner}: `args` are per example (`args_axes={axes!r}`), but their shapes "
            f"{sizes} do not give every per-example leaf the batch size of `y0`, "
            f"{_batch_size(owner, y0)}. Give each per-example argument a leading batch axis "
            "of that size, or mark shared arguments `None` in `args_axes` (a prefix of "
            f"`args`, as `in_axes` of `jax.vmap`).\nJAX said: {e}"
        ) from e


def _example(tree: Any, axes: Any = 0) -> Any:
    """The first example of a batched PyTree (`axes` as `in_axes` of `jax.vmap`)."""
    if axes is None:
        return tree

    def first(axis: Any, sub: Any) -> Any:
        if axis is None:
            return sub
        return jax.tree.map(lambda x: jnp.take(x, 0, axis=axis), sub)

    if isinstance(axes, int):
        return first(axes, tree)
    return jax.tree.map(first, axes, tree, is_leaf=lambda a: a is None)


class Batched(AbstractWrapper):
    r"""Batch mode: solve a batch of initial states as one state, with one shared solve.

    `Batched(model)(y0)` with `y0` of shape `(B, ...)` asks `model` for the `neurde.Problem`
    of one example and integrates its drift (and diffusion) vmapped over the batch axis, as
    one Diffrax solve of the product system (see the `neurde.batch_mode` module docstring).
    `model` itself stays written for one example; `model(y0[b])` and `jax.vmap(model)` still
    work on it, and are the right choice when examples need their own times.

    What batch mode changes, compared with `jax.vmap(model)`:

    - **Steps.** One step-size sequence for the batch: the PID controller's error norm (RMS)
      is taken over the whole batch, so examples do not adapt their own steps. A batch
      result therefore depends on the rest of the batch by up to the solver's tolerance
      (like `neurde.diffusion.ProbabilityFlow`); with constant steps it equals the
      per-example result to rounding.
    - **Gradients.** Backprop differentiates the one solve; `adjoint="adjoint"`
      (`diffrax.BacksolveAdjoint`) solves one backward ODE with one parameter-sized adjoint
      state for the batch, instead of one per example (75-80x faster for an MLP field at
      batch 256 on a CPU, benchmarks/batch_mode.py). `adjoint="reversible"` works as for
      one example, the batch being one state.
    - **Noise.** One Brownian path object for the batch, of shape `(B, d)` (diagonal noise),
      drawn from the call's `key`: a `diffrax.VirtualBrownianTree` or, with constant steps on
      a grid, the per-step increments of `neurde.GridBrownianPath`; the examples' increments
      are independent standard Brownian increments, and the path is a function of the key.
      It differs from the paths of `jax.vmap(model)` with one key per example. A given
      Brownian motion (`NeuralSDE(..., brownian=...)`) must have the batch's shape `(B, d)`.
    - **Statistics.** `solve(...).stats` are the counts of the one shared solve (`nfe` the
      evaluations of the batched drift, each of which evaluates every example); under
      `jax.vmap(model.solve)` they are per example (`neurde.solver_stats`). The backward
      pass's evaluations, in either mode, are counted by `neurde.count_evaluations`.
    - **Extras** (e.g. RNODE's penalties) are per example, shape `(B,)`; randomness other
      than the Brownian motion that a wrapper draws from the key (RNODE's Hutchinson probe,
      STEER's end time) is drawn once for the batch, so STEER integrates the whole batch to
      one random end time (the setting of Ghosh et al.); for one end time per example use
      `jax.vmap(model)` with one key per example.

    **Transforms.** `Batched` is a wrapper (`neurde.AbstractWrapper`): a `neurde.noise`
    transform applied to it is applied to the model inside, so
    `noise.additive(batched(ode), 0.1)` equals `batched(noise.additive(ode, 0.1))`, and
    `eqx.nn.inference_mode` switches the model's noise off as usual. `fit`, `save`/`load`
    and ensembles (`neurde.make_ensemble`) treat it as any model; a loss calls it on a
    batch, `model(ys)`, instead of `jax.vmap(model)(ys)`.

    **What it refuses.** An unbatched `y0`; per-example save times (`ts` of shape `(B, T)`:
    per-example solves, `jax.vmap(model)`); `args` marked per example with another batch
    size; SDEs with scalar or general noise (whose per-example Brownian motions are not one
    array of the state's shape); models that are not continuous (a discrete stack costs
    nothing under `jax.vmap`) or that are built around one (e.g. `continuous.AugmentedODE`:
    batch it with `jax.vmap`).

    **Arguments:**

    - `model`: a continuous model (`neurde.AbstractContinuousModel`: a `NeuralODE`, a
      `NeuralSDE`, or one wrapped by transforms).
    - `args_axes`: how `args` is batched, as `in_axes` of `jax.vmap`: `None` (default) for
      arguments shared by the batch, `0` for a leading batch axis on every leaf, or a PyTree
      prefix of `args` mixing both.

    References: Kidger, "On Neural Differential Equations", doctoral thesis, University of
    Oxford, 2022 (Diffrax's design: one example per solve, batched by `vmap`); Chen,
    Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018
    (torchdiffeq: a minibatch solved as one state).
    """

    model: AbstractContinuousModel
    args_axes: Any = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not isinstance(self.model, AbstractContinuousModel):
            if isinstance(self.model, AbstractModel):
                kind = f"a {type(self.model).__name__}, not a continuous model"
            else:
                kind = f"an object of type {type(self.model).__name__}"
            raise TypeError(
                f"neurde.batched: `model` must be a continuous neurde model (a NeuralODE, a "
                f"NeuralSDE, or one wrapped by a transform); got {kind}. Batch other models "
                "with `jax.vmap(model)` (a discrete stack has constant steps, so vmap costs "
                "nothing there)."
            )

    def problem(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> Problem:
        """The batched `Problem`: the model's problem for one example, its fields vmapped."""
        owner = f"batched({type(self.model).__name__})"
        size = _batch_size(owner, y0)
        if ts is not None and jnp.ndim(ts) != 1:
            raise ValueError(
                f"{owner}: batch mode shares one set of save times `ts` (shape (T,)) across the "
                f"batch; got shape {jnp.shape(ts)}. For per-example save times use "
                "`jax.vmap(model)` over `(y0, ts)`."
            )
        _check_args(owner, args, self.args_axes, y0)
        one = self.model.problem(_example(y0), ts, args=_example(args, self.args_axes), key=key)
        return _batch_problem(owner, one, size, self.args_axes)

    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Solve the batch `y0` (leading axis `B`) as one state; see `Batched`.

        **Returns:**

        A `neurde.ModelSolution` with `ys` of shape `(B, ...)` (or `(B, T, ...)` with save
        times `ts`), `extras` of shape `(B,)`, and `stats` of the one shared solve.
        """
        solution = integrate(self.problem(y0, ts, args=args, key=key), y0, ts, args)
        if ts is None:
            return solution
        ys = jax.tree.map(lambda y: jnp.moveaxis(y, 0, 1), solution.ys)
        return dataclasses.replace(solution, ys=ys)


def _batch_problem(owner: str, one: Problem, size: int, axes: Any) -> Problem:
    if one.diffusion is not None and one.noise != "diagonal":
        raise ValueError(
            f"{owner}: batch mode supports diagonal noise, where the batch's Brownian motion "
            f"is one array of the batched state's shape; this SDE has {one.noise} noise. Use "
            "`jax.vmap(model)` with one key per example."
        )
    drift = _Vmapped(one.drift, axes)
    diffusion = None if one.diffusion is None else _Vmapped(one.diffusion, axes)
    augmented = None if one.augmented is None else _Vmapped(one.augmented, axes)
    extras = {k: jnp.broadcast_to(v, (size, *jnp.shape(v))) for k, v in one.extras.items()}
    return dataclasses.replace(
        one,
        drift=drift,
        diffusion=diffusion,
        augmented=augmented,
        extras=extras,
        owner=f"batched({one.owner})",
    )


def batched(model: AbstractContinuousModel, *, args_axes: Any = None) -> Batched:
    """`Batched(model, args_axes)`: solve batches of `model` as one state (batch mode).

    **Arguments:**

    - `model`: a continuous model written for one example.
    - `args_axes`: `None` (shared `args`, default), `0`, or a PyTree prefix, as `in_axes`.

    **Returns:**

    A `neurde.Batched` model called on a batch: `batched(model)(y0s, ts, key=key)`.
    """
    return Batched(model, args_axes)


__all__ = ["Batched", "batched"]
