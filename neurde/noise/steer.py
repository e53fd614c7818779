r"""STEER: integrate a continuous model to a random end time $T' \sim U(T - b, T + b)$."""

import dataclasses
import numbers
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._types import Args, Input, MaybeKey, SaveTimes
from .._validation import require_key
from ..brownian import GridBrownianPath
from ..model import END_TIME_KEY, AbstractContinuousModel, AbstractContinuousWrapper
from ..problem import Problem
from .transform import Where, apply, check_wrappable

_OWNER = "STEER"


class STEER(AbstractContinuousWrapper):
    r"""Stochastic end-time regularization (STEER) of a continuous model.

    In training mode every call integrates the wrapped model's problem from $t_0$ to a
    random end time

    $$T' \sim U(T - b,\ T + b), \qquad t_0 < T - b,$$

    where $T$ is the wrapped model's `t1`; in inference mode (`inference=True`, set by
    `eqx.nn.inference_mode`) it integrates to $T$ exactly and needs no key. Ghosh et al.
    report that the perturbed horizon makes the learned dynamics simpler, so adaptive solvers
    take fewer steps, without changing the model that is evaluated.

    The wrapped model can be any continuous model: a `NeuralODE`, a `NeuralSDE`, or one
    wrapped by another transform. Over a noisy model (`noise.additive(...)`, in either
    order) the SDE is integrated to $T'$, with its Brownian motion sampled on
    $[t_0, T + b]$ by a `diffrax.VirtualBrownianTree` (a `brownian="grid"` path is replaced:
    with constant steps Diffrax spreads the steps evenly over $[t_0, T']$, off the grid); over
    RNODE the penalties are integrated over $[t_0, T']$.

    One $T'$ is drawn per call from `jr.fold_in(key, 1)` (the Brownian motion of a noisy
    model uses `key` itself, so the two are independent and do not depend on the order of the
    transforms). Under `jax.vmap` with one key per example each example gets its own $T'$;
    to draw one $T'$ per minibatch, as a batched solve in Ghosh et al.'s setting does, pass
    the same key to every example. Both are unbiased perturbations of the horizon.

    **Arguments:**

    - `model`: the continuous model to perturb; its `t1` must be set.
    - `b`: half-width of the end-time interval, `0 < b < t1 - t0` so that $T' > t_0$.
      A hyperparameter, tuned per task in Ghosh et al.
    - `inference`: integrate to `t1` exactly (no key needed).

    References: Ghosh, Behl, Dupont, Torr, Namboodiri, "STEER: Simple Temporal
    Regularization For Neural ODEs", NeurIPS 2020.
    """

    model: AbstractContinuousModel
    b: float = eqx.field(static=True)
    inference: bool = False

    def __init__(self, model: AbstractContinuousModel, b: float, *, inference: bool = False):
        if isinstance(b, bool) or not isinstance(b, numbers.Real):
            raise TypeError(f"{_OWNER}: `b` must be a Python float, got {type(b).__name__}.")
        self.model = model
        self.b = float(b)
        self.inference = inference

    def __check_init__(self):
        check_wrappable(
            _OWNER,
            self.model,
            STEER,
            "STEER(neurde.NeuralODE(field, t1=1.0), b=0.5)",
            "which draws its own end time; a second STEER would overwrite it. Apply STEER once.",
        )
        t0, t1 = self.model.t0, self.model.t1
        if t1 is None:
            raise ValueError(
                f"{_OWNER}: the wrapped model has no end time (`t1=None`: each solve ends at "
                "its last save time, as in a NeuralODE built without `t1` or the latent ODE of "
                "a continuous.LatentODE), and STEER perturbs the end time. Apply STEER to a "
                "model with a fixed end time, e.g. `NeuralODE(field, t1=1.0)`."
            )
        length = t1 - t0
        if not 0 < self.b < length:
            raise ValueError(
                f"{_OWNER}: `b` must satisfy 0 < b < t1 - t0 = {length} so that the end time "
                f"T' ~ U(t1 - b, t1 + b) stays after t0 = {t0}; got b={self.b!r}. Try "
                f"b={0.5 * length}."
            )

    def end_time(self, key: PRNGKeyArray | None = None) -> Float[Array, ""]:
        """The end time of a call with this `key`: $T' \\sim U(T - b, T + b)$, or $T$ in
        inference mode."""
        t1 = self.model.t1
        assert t1 is not None  # checked at construction
        if self.inference:
            return jnp.asarray(t1, dtype=float)
        key = require_key(
            _OWNER,
            key,
            "draw the end time",
            "To integrate to the fixed end time instead, use `eqx.nn.inference_mode(steer)` "
            "(or `STEER(..., inference=True)`).",
        )
        end_key = jr.fold_in(key, END_TIME_KEY)
        return jr.uniform(end_key, (), minval=t1 - self.b, maxval=t1 + self.b)

    def problem(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> Problem:
        """The wrapped model's problem with the end time $T'$ of this call."""
        if ts is not None:
            raise ValueError(
                f"{_OWNER}: got save times `ts`, but STEER perturbs only the end time, so it "
                "returns y(T') alone and `ts` must be None. For a trajectory at fixed times, "
                "call the wrapped model: `steer.model(y0, ts)`. A model that reads its inner "
                "solve at save times (a `stochastic.LatentSDE` or `SDEGenerator`, which report "
                "a path) cannot hold a STEER: build it without `noise.steer`."
            )
        inner = self.model.problem(y0, None, args=args, key=key)
        if self.inference:
            return inner
        if inner.diffusion is not None and isinstance(inner.path, GridBrownianPath):
            raise ValueError(
                f"{_OWNER}: the wrapped SDE runs on given increments (`brownian=`) on a step "
                "grid, but a random end time puts the steps off that grid. Give it a "
                "Brownian path defined between grid points (e.g. a "
                "`diffrax.VirtualBrownianTree` over [t0, t1 + b]), or let it draw its "
                "Brownian motion from the key."
            )
        t1 = self.end_time(key).astype(jnp.result_type(inner.t1, float))
        # A random end time is off the step grid, so Diffrax's constant steps (the interval
        # split evenly) fall between the points of a grid Brownian path, whose linear
        # interpolation would lose variance there: sample a virtual Brownian tree instead.
        brownian = "tree" if inner.diffusion is not None else inner.brownian
        return dataclasses.replace(
            inner, t1=t1, brownian_t1=float(inner.t1) + self.b, brownian=brownian
        )


def steer(model: Any, b: float, *, where: Where = None) -> Any:
    """Wrap a continuous model in `STEER(model, b)` (random end time $T' \\sim U(T \\pm b)$).

    `model` may also be a wrapper (a `neurde.Composed`, a `noise.MonteCarlo`), whose inner
    model is wrapped, or any module when `where` selects the model inside it (e.g.
    `where=lambda m: m.ode`).
    """
    return apply(
        "neurde.noise.steer",
        model,
        where,
        continuous=lambda m: STEER(m, b),
        discrete="STEER perturbs the end time of a continuous solve, and a discrete stack has "
        "a fixed depth; randomize its blocks with `stochastic_depth` instead.",
    )
