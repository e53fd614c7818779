"""How a `neurde.noise` transform finds the model it acts on, and what it does to each kind.

Every transform (`additive`, `steer`, `stochastic_depth`, ...) is applied by `apply`:

- with `where=` (a function selecting a model inside `model`, as in `eqx.tree_at`), the
  transform is applied to `where(model)` and the result put back in its place;
- to a continuous model (`neurde.AbstractContinuousModel`, wrapped or not), the transform
  wraps it;
- to a `discrete.ResidualStack`, the transform randomises its scheme (`StochasticEuler`);
- to a wrapper (`neurde.AbstractWrapper`: `neurde.Composed`, `discrete.Classifier`,
  `MonteCarlo`), the transform is applied to the model it holds;
- anything else is a `TypeError` that asks for `where=`.

A transform with no meaning for a kind of model (STEER on a discrete stack, a branch
regularizer on an ODE, a second random end time) raises a `TypeError` at construction that
names what the model already is and why.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import diffrax
import equinox as eqx

from .._config import BrownianKind
from ..discrete import Euler, ResidualStack
from ..model import (
    AbstractContinuousModel,
    AbstractModel,
    AbstractWrapper,
    wrapped_models,
)
from .base import AbstractBranchRegularizer, AbstractNoise
from .branches import Branches
from .noisy import NoisyModel
from .stochastic_euler import Form, StochasticEuler

Where: TypeAlias = Callable[[Any], Any] | None
Action: TypeAlias = Callable[[Any], Any] | str


def describe(model: Any) -> str:
    """A short description of a model and the transforms already applied to it."""
    if isinstance(model, ResidualStack):
        scheme = model.scheme
        if isinstance(scheme, StochasticEuler):
            parts = [type(noise).__name__ for noise in scheme.noises]
            parts += [] if scheme.branch is None else [type(scheme.branch).__name__]
            return f"a ResidualStack randomised by {' and '.join(parts) or 'StochasticEuler'}"
        return f"a ResidualStack with scheme {type(scheme).__name__}"
    names = [type(m).__name__ for m in wrapped_models(model)]
    return "(".join(names) + ")" * (len(names) - 1)


def find_wrapper(model: Any, cls: type) -> Any:
    """The first model of type `cls` in `model`'s chain of wrapped models, or `None`."""
    for inner in wrapped_models(model):
        if isinstance(inner, cls):
            return inner
    return None


def _act(owner: str, action: Action, model: Any) -> Any:
    if isinstance(action, str):
        raise TypeError(f"{owner} cannot be applied to {describe(model)}: {action}")
    return action(model)


def apply(
    owner: str,
    model: Any,
    where: Where,
    *,
    continuous: Action,
    discrete: Action,
    extras: bool = False,
) -> Any:
    """Apply a transform to `model` (see the module docstring for the rules).

    `continuous` and `discrete` are what the transform does to each kind of model, or the
    reason it cannot. `extras=True` marks transforms that add extra outputs, which only
    reach a loss through a chain of `neurde.AbstractModel`s.
    """
    if where is not None:
        return _apply_where(owner, model, where, continuous, discrete, extras)
    if isinstance(model, AbstractContinuousModel):
        return _act(owner, continuous, model)
    if isinstance(model, ResidualStack):
        return _act(owner, discrete, model)
    if isinstance(model, AbstractWrapper):
        inner = apply(owner, model.model, None, continuous=continuous, discrete=discrete)
        return eqx.tree_at(lambda m: m.model, model, inner)
    raise TypeError(
        f"{owner}: expected a neurde model (a NeuralODE, a NeuralSDE, a "
        "discrete.ResidualStack, or a model around one such as a discrete.Classifier), got "
        f"{type(model).__name__}. For a module that holds a model, say which one with "
        "`where=`, e.g. `where=lambda m: m.ode`."
    )


def _apply_where(
    owner: str, model: Any, where: Any, continuous: Action, discrete: Action, extras: bool
) -> Any:
    if not callable(where):
        raise TypeError(
            f"{owner}: `where` must be a function selecting the model inside `model`, e.g. "
            f"`where=lambda m: m.ode`; got {type(where).__name__}."
        )
    try:
        target = where(model)
    except Exception as e:
        raise TypeError(
            f"{owner}: `where` could not select a model inside {type(model).__name__}: "
            f"{type(e).__name__}: {e}"
        ) from e
    if not isinstance(target, AbstractModel):
        raise TypeError(
            f"{owner}: `where` must select a neurde model inside {type(model).__name__}, got "
            f"{type(target).__name__}."
        )
    if extras and not isinstance(model, AbstractModel):
        raise TypeError(
            f"{owner}: the transform adds extra outputs (`solve(...).extras`), but "
            f"{type(model).__name__} is not a neurde.AbstractModel, so calling it would drop "
            "them. Build the outer module as a `neurde.Composed(encoder, model, decoder)`, or "
            "make it an AbstractModel whose `solve` passes `extras` through (see "
            "`neurde.model`), or apply the transform to the inner model before building the "
            "module and call its `solve` yourself."
        )
    new = apply(owner, target, None, continuous=continuous, discrete=discrete)
    return eqx.tree_at(where, model, new)


def _randomise(
    owner: str,
    stack: ResidualStack,
    noises: tuple[AbstractNoise, ...] = (),
    branch: AbstractBranchRegularizer | None = None,
    form: Form = "discrete",
) -> ResidualStack:
    """`stack` with its Euler scheme made a `StochasticEuler` with `noises` and `branch`."""
    scheme = stack.scheme
    if isinstance(scheme, Euler):
        scheme = StochasticEuler(stack.depth)
    elif not isinstance(scheme, StochasticEuler):
        raise TypeError(
            f"{owner}: noise on a discrete net is an Euler–Maruyama step per block, so it "
            f"needs a ResNet stack (scheme Euler()); got {type(scheme).__name__}. Build the "
            "stack with `neurde.discrete.Euler()`."
        )
    if branch is not None:
        if scheme.branch is not None:
            raise TypeError(
                f"{owner}: the stack's residual branches are already randomised by "
                f"{type(scheme.branch).__name__}, and {type(branch).__name__} would be a "
                "second random multiplier of the same branch, whose SDE form is neither "
                "regularizer's. Use one branch regularizer per stack (noises can be added "
                "freely)."
            )
        if branch.branches == 2 and not isinstance(stack.blocks, Branches):
            raise TypeError(
                f"{owner}: {type(branch).__name__} mixes two residual branches, so every block "
                "must be a `neurde.noise.Branches(f1, f2)`; got blocks of type "
                f"{type(stack.blocks).__name__}."
            )
        scheme = dataclasses.replace(scheme, branch=branch, form=form)
    scheme = dataclasses.replace(scheme, noises=scheme.noises + noises)
    return eqx.tree_at(lambda s: s.scheme, stack, scheme)


def inject(
    model: Any,
    *noises: AbstractNoise,
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    brownian: BrownianKind | None = None,
    where: Where = None,
) -> Any:
    r"""Add Gaussian noises to `model`'s dynamics; the transform behind `additive` & co.

    - On a continuous model (wrapped or not): a `NoisyModel`, solved as an SDE (`solver`,
      `dt0`, `brownian` as there). Applied again, the noises accumulate in one diffusion.
    - On an Euler `ResidualStack`: its scheme becomes a `StochasticEuler` adding
      $\sqrt{h}\,g \odot \xi$ per block.
    - On a wrapper (`Composed`, `Classifier`, `MonteCarlo`), or with `where=`: the model
      inside (see `neurde.noise.apply`).
    """
    owner = "neurde.noise.inject"
    for noise in noises:
        if not isinstance(noise, AbstractNoise):
            raise TypeError(
                f"{owner}: noises must be neurde.noise.AbstractNoise objects (Additive, "
                f"Multiplicative, DropoutDiffusion), got {type(noise).__name__}."
            )
    options = {"solver": solver, "dt0": dt0, "brownian": brownian}
    given = sorted(k for k, v in options.items() if v is not None)

    def continuous(target: Any) -> Any:
        return NoisyModel(target, noises, solver=solver, dt0=dt0, brownian=brownian)

    def discrete(stack: ResidualStack) -> Any:
        if given:
            raise ValueError(
                f"{owner}: {given} apply to continuous models only; a discrete stack takes "
                "one Euler–Maruyama step per block of size h."
            )
        return _randomise(owner, stack, noises=noises)

    return apply(owner, model, where, continuous=continuous, discrete=discrete)


def regularize(
    model: Any,
    branch: AbstractBranchRegularizer,
    *,
    form: Literal["discrete", "sde"] = "discrete",
    where: Where = None,
) -> Any:
    """Randomise every residual branch of an Euler stack with `branch` (discrete or SDE form).

    The transform behind `residual_dropout`, `stochastic_depth`, `shake_shake` and
    `shake_drop`; `model` is found as for every transform (see `neurde.noise.apply`).
    """
    name = type(branch).__name__
    owner = f"neurde.noise ({name})"
    if form not in ("discrete", "sde"):
        raise ValueError(f"{owner}: `form` must be 'discrete' or 'sde', got {form!r}.")
    return apply(
        owner,
        model,
        where,
        continuous=f"{name} randomises the residual branches of a discrete net (a "
        "ResidualStack with scheme Euler). For continuous models inject noise instead: "
        "`neurde.noise.dropout_diffusion`, `additive` or `multiplicative`.",
        discrete=lambda stack: _randomise(owner, stack, branch=branch, form=form),
    )
