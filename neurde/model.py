r"""The model interface: what every neurde model and every wrapper implements.

Every model (a neural ODE or SDE, a discrete residual stack, a model wrapped by a
regularizer, a classifier around a stack) is an `AbstractModel`, called the same way:

- `model(y0, ts=None, *, args=None, key=None)` returns the state: at the end of the
  interval, or with save times `ts`, at each of them (stacked on a leading axis). One
  example in, one out; batch with `jax.vmap`.
- `model.solve(y0, ts=None, *, args=None, key=None)` returns a `ModelSolution`: the same
  state (`ys`), the cost (`stats["nfe"]`, steps), the declared extra outputs (`extras`,
  e.g. RNODE's penalties) and the outcome (`result`).

A call always returns the state, whichever regularizers are applied; extra outputs reach a
loss through `solve(...).extras`, and every wrapper passes them through.

There are three kinds of model, and a regularizer transform (`neurde.noise`) treats each in
its own way:

- **continuous models** (`AbstractContinuousModel`: `NeuralODE`, `NeuralSDE` and the
  wrappers that change a solve: noise injection, STEER, RNODE) describe their solve as a
  `neurde.Problem`; a transform wraps the model, and the wrapper changes the problem of the
  model it holds (adds a diffusion, draws an end time, adds extra outputs), so wrappers
  compose in any order and the stack is solved by one `diffrax.diffeqsolve`;
- **discrete models** (`neurde.discrete.ResidualStack`) apply a scheme block by block; a
  transform replaces the scheme by its randomized version (`neurde.noise.StochasticEuler`),
  so one scan serves plain and noisy nets;
- **wrappers** (`AbstractWrapper`: `neurde.Composed`, `neurde.discrete.Classifier`,
  `neurde.noise.MonteCarlo`) hold one model and compute something around it; a transform
  applied to a wrapper is applied to the model it holds.

Randomness is explicit: a call's `key` is used by every part of a stack that needs one, each
drawing from `jr.fold_in(key, tag)` with its own tag (the Brownian motion from `key` itself),
so the draws do not depend on the order in which wrappers were stacked.

**What a new model family implements.**

- A continuous model: subclass `AbstractContinuousModel`, give it the interval `t0`, `t1`
  (fields or properties) and implement `problem(y0, ts, *, args, key) -> Problem`. Build the
  problem's solver configuration with the checks in `neurde.NeuralODE` (the same messages
  whether a setting came from the constructor or from `eqx.tree_at`). A state that carries
  more than the user's (an augmented dimension, a log-density) is the model's own state:
  `y0` in, state out. Integrals of the trajectory that a loss needs (a penalty, a KL term)
  are `extras`: add them with `Problem.extras` and `Problem.augmented`.
- A wrapper that changes a continuous solve: subclass `AbstractContinuousWrapper`, hold the
  model as `model`, and implement `problem` by changing `self.model.problem(...)`.
- A model built around another (an encoder and decoder, a head): subclass `AbstractWrapper`,
  hold the inner model as `model` (a field or a property) and implement `solve` by calling
  `self.model.solve` and mapping the state with `ModelSolution.map`, so `stats`, `extras`
  and `result` pass through.
- A discrete architecture: a new `neurde.discrete.AbstractScheme` in a `ResidualStack`.
"""

import abc
from typing import Any

import equinox as eqx
from jaxtyping import PyTree

from ._solve import integrate
from ._types import Args, Input, MaybeKey, SaveTimes
from .problem import Problem
from .solution import ModelSolution

# Tags of `jr.fold_in(key, tag)` for the randomness a wrapper draws next to the Brownian
# motion (which uses the call's key itself).
END_TIME_KEY = 1
PROBE_KEY = 2


class AbstractModel(eqx.Module):
    """Every neurde model: `model(y0, ts=None, *, args=None, key=None)` and `model.solve(...)`.

    See the `neurde.model` module docstring for the three kinds of model and what a new
    family implements.
    """

    @abc.abstractmethod
    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Run the model on one (unbatched) example and return the full `ModelSolution`.

        **Arguments:**

        - `y0`: the initial state (the input, for a discrete net).
        - `ts`: save times, or `None` for the state at the end only.
        - `args`: passed to every field as its third argument.
        - `key`: the randomness of stochastic models (noise, random end times, probes);
          required in training mode when the model draws any, ignored otherwise.
        """

    def __call__(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> PyTree[Any]:
        """The state `model.solve(y0, ts, args=args, key=key).ys`."""
        return self.solve(y0, ts, args=args, key=key).ys


class AbstractWrapper(AbstractModel):
    """A model built around one inner model, `model` (a field or a property).

    Regularizer transforms applied to a wrapper are applied to its `model`, and `solve`
    passes the inner solution's `stats`, `extras` and `result` through.
    """

    model: eqx.AbstractVar[AbstractModel]


class AbstractContinuousModel(AbstractModel):
    """A model integrated by Diffrax: it describes its solve as a `neurde.Problem`.

    Subclasses give the interval `t0`, `t1` (`t1=None`: up to the last save time) and
    implement `problem`; `solve` is written once, here.
    """

    t0: eqx.AbstractVar[float]
    t1: eqx.AbstractVar[float | None]

    @abc.abstractmethod
    def problem(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> Problem:
        """The `Problem` one call solves (traced once per compilation; checks go here)."""

    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Solve from one (unbatched) initial state; see `AbstractModel.solve`."""
        return integrate(self.problem(y0, ts, args=args, key=key), y0, ts, args)


class AbstractContinuousWrapper(AbstractContinuousModel):
    """A continuous model that changes the problem of the continuous model it holds.

    The interval is the inner model's.
    """

    model: eqx.AbstractVar[AbstractContinuousModel]

    @property
    def t0(self) -> float:
        return self.model.t0

    @property
    def t1(self) -> float | None:
        return self.model.t1


def wrapped_models(model: AbstractModel) -> list[AbstractModel]:
    """`model` and the models it wraps, outermost first, following `model` attributes."""
    chain = [model]
    while isinstance(model, AbstractWrapper | AbstractContinuousWrapper):
        model = model.model
        chain.append(model)
    return chain
