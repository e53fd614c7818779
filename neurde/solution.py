"""`ModelSolution`: what `model.solve(...)` returns for every neurde model."""

import dataclasses
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
from jaxtyping import Array, Float, Int, PyTree


class ModelSolution(eqx.Module):
    r"""The full result of one solve: the state, its cost, the extra outputs, the outcome.

    `model(y0, ts, ...)` returns `model.solve(y0, ts, ...).ys` for every model, so a call
    never changes shape because a regularizer was applied; a loss that needs more reads it
    here.

    **Fields:**

    - `ys`: the state at the end of the interval (the structure of `y0`), or with save
      times `ts`, the states at each of them stacked on a leading axis.
    - `ts`: the save times, or `None`.
    - `stats`: integer scalars: `nfe` (evaluations of the (drift) vector field, or of the
      blocks of a discrete stack; -1 when unknown, e.g. implicit solvers), `num_steps`,
      `num_accepted_steps`, `num_rejected_steps`.
    - `extras`: the model's declared extra outputs, scalars keyed by name: RNODE's
      `"kinetic"` and `"jacobian"` penalties, integrated over the whole interval; empty when
      the model declares none. Every wrapper passes them through.
    - `result`: Diffrax's outcome code (`diffrax.RESULTS.successful`, ...); only worth
      reading for models built with `throw=False`, which return a failed solve instead of
      raising.
    """

    ys: PyTree[Array]
    ts: Float[Array, " times"] | None
    stats: dict[str, Int[Array, ""]]
    extras: dict[str, Float[Array, ""]]
    result: diffrax.RESULTS

    def map(self, fn: Callable[[Any], Any]) -> "ModelSolution":
        """The same solution with `fn` applied to the state (at each save time, if any).

        This is how a model built around another one (a classifier head, a decoder) returns
        its output while passing `stats`, `extras` and `result` through.
        """
        ys = fn(self.ys) if self.ts is None else jax.vmap(fn)(self.ys)
        return dataclasses.replace(self, ys=ys)
