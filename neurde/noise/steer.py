"""STEER: train a neural ODE to a random end time $T' \\sim U(T - b, T + b)$."""

import numbers
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree

from .._types import Args
from ..ode import NeuralODE
from .transform import replace_model

_OWNER = "STEER"


def _check_no_ts(ts: Any) -> None:
    if ts is not None:
        raise ValueError(
            f"{_OWNER}: got save times `ts`, but STEER perturbs only the end time, so it "
            "returns y(T') alone and `ts` must be None. For a trajectory at fixed times, call "
            "the wrapped model: `steer.model(y0, ts)`."
        )


class STEER(eqx.Module):
    r"""Stochastic end-time regularization (STEER) of a `neurde.NeuralODE`.

    In training mode every call integrates $\dot y = f_\theta(t, y)$ from $t_0$ to a random
    end time

    $$T' \sim U(T - b,\ T + b), \qquad t_0 < T - b,$$

    where $T$ is the wrapped model's `t1`; in inference mode (`inference=True`, set by
    `eqx.nn.inference_mode`) it integrates to $T$ exactly and needs no key. Ghosh et al.
    report that the perturbed horizon makes the learned dynamics simpler, so adaptive solvers
    take fewer steps, without changing the model that is evaluated.

    One $T'$ is drawn per call from its `key`. Under `jax.vmap` with one key per example
    (`jax.vmap(lambda x, k: steer(x, key=k))`) each example gets its own $T'$; to draw one
    $T'$ per minibatch, as a batched solve in Ghosh et al.'s setting does, pass the same key
    to every example
    (`jax.vmap(lambda x: steer(x, key=k))`). Both are unbiased perturbations of the horizon.

    **Arguments:**

    - `model`: the `neurde.NeuralODE` to perturb; its `t1` must be set.
    - `b`: half-width of the end-time interval, `0 < b < t1 - t0` so that $T' > t_0$.
      A hyperparameter, tuned per task in Ghosh et al.
    - `inference`: integrate to `t1` exactly (no key needed).

    References: Ghosh, Behl, Dupont, Torr, Namboodiri, "STEER: Simple Temporal
    Regularization For Neural ODEs", NeurIPS 2020.
    """

    model: NeuralODE
    b: float = eqx.field(static=True)
    inference: bool = False

    def __init__(self, model: NeuralODE, b: float, *, inference: bool = False):
        if not isinstance(model, NeuralODE):
            raise TypeError(
                f"{_OWNER}: `model` must be a `neurde.NeuralODE`, got an object of type "
                f"{type(model).__name__}. Wrap a field first: "
                "`STEER(neurde.NeuralODE(field, t1=1.0), b=0.5)`."
            )
        if model.t1 is None:
            raise ValueError(
                f"{_OWNER}: the wrapped NeuralODE has no end time (`t1=None`), and STEER "
                "perturbs the end time. Build it with one, e.g. `NeuralODE(field, t1=1.0)`."
            )
        length = model.t1 - model.t0
        if isinstance(b, bool) or not isinstance(b, numbers.Real):
            raise TypeError(f"{_OWNER}: `b` must be a Python float, got {type(b).__name__}.")
        if not 0 < b < length:
            raise ValueError(
                f"{_OWNER}: `b` must satisfy 0 < b < t1 - t0 = {length} so that the end time "
                f"T' ~ U(t1 - b, t1 + b) stays after t0 = {model.t0}; got b={b!r}. Try "
                f"b={0.5 * length}."
            )
        self.model = model
        self.b = float(b)
        self.inference = inference

    def end_time(self, key: PRNGKeyArray | None = None) -> Float[Array, ""]:
        """The end time of one call: $T' \\sim U(T - b, T + b)$, or $T$ in inference mode."""
        t1 = self.model.t1
        assert t1 is not None  # checked in __init__
        if self.inference:
            return jnp.asarray(t1, dtype=float)
        if key is None:
            raise ValueError(
                f"{_OWNER}: a `key` is needed in training mode to draw the end time: call "
                "`steer(y0, key=jr.key(0))`. To integrate to the fixed end time instead, use "
                "`eqx.nn.inference_mode(steer)` (or `STEER(..., inference=True)`)."
            )
        return jr.uniform(key, (), minval=t1 - self.b, maxval=t1 + self.b)

    def _call_end_time(self, key: PRNGKeyArray | None) -> Float[Array, ""] | None:
        # None in inference mode: the wrapped model then runs exactly as it would alone.
        return None if self.inference else self.end_time(key)

    def solve(
        self,
        y0: PyTree[Float[ArrayLike, "..."]],
        ts: None = None,
        *,
        args: Args = None,
        key: PRNGKeyArray | None = None,
    ) -> diffrax.Solution:
        """Solve to the end time of this call and return the full `diffrax.Solution`.

        Arguments are as for `__call__`; use `stats(solution)` for the number of function
        evaluations.
        """
        _check_no_ts(ts)
        return self.model.solve(y0, args=args, t1=self._call_end_time(key))

    def __call__(
        self,
        y0: PyTree[Float[ArrayLike, "..."]],
        ts: None = None,
        *,
        args: Args = None,
        key: PRNGKeyArray | None = None,
    ) -> PyTree[Float[Array, "..."]]:
        """Solve from one (unbatched) initial state to $T'$ (training) or $T$ (inference).

        **Arguments:**

        - `y0`: the initial state at `t0`, any PyTree of floating arrays.
        - `ts`: must be None (accepted so STEER shares `NeuralODE`'s signature).
        - `args`: passed to the field as its third argument.
        - `key`: draws the end time; required in training mode, ignored in inference mode.

        **Returns:**

        The state at the end time, with the structure of `y0`.
        """
        _check_no_ts(ts)
        return self.model(y0, args=args, t1=self._call_end_time(key))

    def stats(self, solution: diffrax.Solution) -> dict[str, Int[Array, ""]]:
        """Number of function evaluations and steps of a solve made by `solve`."""
        return self.model.stats(solution)


def steer(model: Any, b: float) -> Any:
    """Wrap `model`'s `NeuralODE` (or the `NeuralODE` itself) in `STEER(ode, b)`."""
    return replace_model(
        "neurde.noise.steer", model, lambda ode: STEER(ode, b), (NeuralODE,), "a NeuralODE"
    )


__all__ = ["STEER", "steer"]
