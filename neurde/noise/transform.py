"""How a `neurde.noise` transform finds the model it acts on, and what it does to each kind.

Every transform (`additive`, `steer`, `stochastic_depth`, ...) is applied by `apply`:

- with `where=` (a function selecting a model inside `model`, as in `eqx.tree_at`), the
  transform is applied to `where(model)` and the result put back in its place;
- to a continuous model (`neurde.AbstractContinuousModel`, wrapped or not), the transform
  wraps it;
- to a `discrete.ResidualStack`, the transform randomizes its scheme (`StochasticEuler`);
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
from .base import AbstractBranchRegularizer, AbstractNoise, check_noises
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
            return f"a ResidualStack randomized by {' and '.join(parts) or 'StochasticEuler'}"
        return f"a ResidualStack with scheme {type(scheme).__name__}"
    names = [type(m).__name__ for m in wrapped_models(model)]
    return "(".join(names) + ")" * (len(names) - 1)


def find_wrapper(model: Any, cls: type) -> Any:
    """The first model of type `cls` in `model`'s chain of wrapped models, or `None`."""
    for inner in wrapped_models(model):
        if isinstance(inner, cls):
            return inner
    return None


def check_wrappable(owner: str, model: Any, cls: type, example: str, again: str) -> None:
    """A wrapper of type `cls` may wrap `model`: a continuous model that no `cls` wraps yet
    (`again` says why a second one has no meaning)."""
    if not isinstance(model, AbstractContinuousModel):
        raise TypeError(
            f"{owner}: `model` must be a continuous neurde model (a `neurde.NeuralODE`, "
            f"`NeuralSDE`, or one wrapped by a transform), got an object of type "
            f"{type(model).__name__}. Wrap a field first: `{example}`."
        )
    if find_wrapper(model, cls) is not None:
        raise TypeError(f"{owner}: the model is already {describe(model)}, {again}")


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
    """Apply a transform to `model`: how every `neurde.noise` transform finds its target.

    - With `where=` (a function selecting a model inside `model`, as in `eqx.tree_at`), the
      transform is applied to `where(model)` and the result is put back in its place.
    - A continuous model (`neurde.AbstractContinuousModel`, wrapped or not) is wrapped.
    - A `discrete.ResidualStack` gets its Euler scheme randomized (`StochasticEuler`).
    - A wrapper (`neurde.AbstractWrapper`: `neurde.Composed`, `discrete.Classifier`,
      `MonteCarlo`) has the transform applied to the model it holds.
    - Anything else is a `TypeError` that asks for `where=`.

    **Arguments:**

    - `owner`: the transform's name, for messages.
    - `model`: what the transform is applied to.
    - `where`: an optional selector of the model inside `model`.
    - `continuous`, `discrete`: what the transform does to each kind of model, or a string
      saying why it has no meaning there (then a `TypeError` is raised at construction).
    - `extras`: the transform adds extra outputs (`solve(...).extras`), which only reach a
      loss through a chain of `neurde.AbstractModel`s; a module in between that is not one
      is refused.
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
    # The modules between `model` and the target: each must pass the extras on.
    containers = (_path(model, target) or [model, target])[:-1]
    dropping = [m for m in containers if not isinstance(m, AbstractModel)]
    if extras and dropping:
        raise TypeError(
            f"{owner}: the transform adds extra outputs (`solve(...).extras`), but "
            f"{type(dropping[-1]).__name__} is not a neurde.AbstractModel, so calling it would "
            "drop them. Build the outer module as a `neurde.Composed(encoder, model, decoder)`, "
            "or make it an AbstractModel whose `solve` passes `extras` through (see "
            "`neurde.model`), or apply the transform to the inner model before building the "
            "module and call its `solve` yourself."
        )
    new = apply(owner, target, None, continuous=continuous, discrete=discrete)
    return eqx.tree_at(where, model, new)


def _path(root: Any, target: Any) -> list[Any]:
    """The nodes from `root` down to `target` (found by identity), or `[]`."""
    if root is target:
        return [root]
    if isinstance(root, eqx.Module):
        children = [getattr(root, f.name) for f in dataclasses.fields(root)]
    elif isinstance(root, list | tuple):
        children = list(root)
    elif isinstance(root, dict):
        children = list(root.values())
    else:
        return []
    for child in children:
        path = _path(child, target)
        if path:
            return [root, *path]
    return []


def _randomize(
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
    if scheme.inference:
        raise TypeError(
            f"{owner}: the stack is {describe(stack)}, switched off by `eqx.nn.inference_mode`, "
            "and one StochasticEuler scheme has one inference flag for all its randomness, so "
            "the new one would be switched off too. Apply every transform first and "
            "`inference_mode` last, or switch the stack back on with "
            "`eqx.nn.inference_mode(model, False)`."
        )
    if branch is not None:
        if scheme.branch is not None:
            raise TypeError(
                f"{owner}: the stack's residual branches are already randomized by "
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
    noises = check_noises(owner, noises)
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
        return _randomize(owner, stack, noises=noises)

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
    if not isinstance(branch, AbstractBranchRegularizer):
        raise TypeError(
            f"neurde.noise.regularize: `branch` must be a branch regularizer (ResidualDropout, "
            f"StochasticDepth, ShakeShake, ShakeDrop), got {name}."
        )
    if form not in ("discrete", "sde"):
        raise ValueError(f"{owner}: `form` must be 'discrete' or 'sde', got {form!r}.")
    return apply(
        owner,
        model,
        where,
        continuous=f"{name} randomizes the residual branches of a discrete net (a "
        "ResidualStack with scheme Euler). For continuous models inject noise instead: "
        "`neurde.noise.dropout_diffusion`, `additive` or `multiplicative`.",
        discrete=lambda stack: _randomize(owner, stack, branch=branch, form=form),
    )
